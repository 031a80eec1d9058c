"""Log lines are JSON an aggregator can index, carry the correlation id, and never a secret."""

from __future__ import annotations

import json
import logging as stdlib_logging
from collections.abc import Iterator

import pytest
import structlog

from notify_common import logging as log


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root_handlers = list(stdlib_logging.getLogger().handlers)
    yield
    # Later tests must not write to this test's (by then closed) capture stream.
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    stdlib_logging.getLogger().handlers[:] = root_handlers


def configure(**kwargs: str) -> None:
    # Called inside each test, not in a fixture: capsys replaces sys.stderr between fixture
    # setup and the test call, and the logger writes to the stream current at configure time.
    log.configure(service="x", **kwargs)


def entries(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_log_line_is_json_with_service_and_correlation_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure()
    log.bind_correlation("req-42")
    log.get("test").info("notification stored", notification_id="n-1")

    [entry] = entries(capsys)
    assert entry["event"] == "notification stored"
    assert entry["service"] == "x"
    assert entry["correlation_id"] == "req-42"
    assert entry["notification_id"] == "n-1"
    assert entry["level"] == "info"
    assert "timestamp" in entry


def test_request_context_is_cleared_between_requests(capsys: pytest.CaptureFixture[str]) -> None:
    configure()
    log.bind_correlation("req-1")
    log.clear_request_context("x")
    log.get("test").info("next request")

    [entry] = entries(capsys)
    assert entry["service"] == "x"
    assert "correlation_id" not in entry


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "database_url",
        "jwt_secret",
        "Authorization",
        "service_token",
        "vapid_private_key",
    ],
)
def test_secret_looking_keys_are_redacted(capsys: pytest.CaptureFixture[str], key: str) -> None:
    configure()
    secret = "postgresql://notify:hunter2@db:5432/notify"
    log.get("test").warning("connecting", **{key: secret}, host="db")

    out = capsys.readouterr().err
    assert "hunter2" not in out
    [entry] = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert entry[key] == "**redacted**"
    assert entry["host"] == "db"  # ordinary values are left alone


def test_level_filter_drops_lower_levels(capsys: pytest.CaptureFixture[str]) -> None:
    configure(level="WARNING")
    logger = log.get("test")
    logger.info("chatty")
    logger.warning("important")

    assert [e["event"] for e in entries(capsys)] == ["important"]


def test_lines_from_other_threads_name_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    configure()
    # A consumer thread does not inherit the main thread's context variables.
    thread = threading.Thread(target=lambda: log.get("t").info("from a worker"))
    thread.start()
    thread.join()
    [line] = entries(capsys)
    assert line["service"] == "x"
    assert line["event"] == "from a worker"
