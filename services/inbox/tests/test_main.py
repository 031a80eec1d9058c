"""`notify-inbox` as a process: settings checks at start, graceful stop on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from notify_common.settings import load
from notify_common.testing.infra import free_port, stop_process
from notify_inbox.settings import InboxSettings
from notify_schemas import topics


def test_settings_without_a_jwt_secret_refuse_to_load(monkeypatch, capsys):
    monkeypatch.delenv("NOTIFY_JWT_SECRET", raising=False)
    monkeypatch.setenv("NOTIFY_DATABASE_URL", "postgresql+psycopg://x@127.0.0.1:1/x")
    with pytest.raises(SystemExit) as exc:
        load(InboxSettings)
    assert "NOTIFY_JWT_SECRET is required" in str(exc.value)
    assert "NOTIFY_JWT_SECRET" in capsys.readouterr().err
    assert exc.value.code != 0


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("NOTIFY_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("NOTIFY_DATABASE_URL", "postgresql+psycopg://x@127.0.0.1:1/x")
    monkeypatch.setenv("NOTIFY_INBOX_PORT", "9101")
    monkeypatch.setenv("NOTIFY_INBOX_OUTBOX_BATCH_SIZE", "100")
    settings = load(InboxSettings)
    assert settings.inbox_port == 9101
    assert settings.inbox_outbox_batch_size == 100
    monkeypatch.setenv("NOTIFY_INBOX_OUTBOX_BATCH_SIZE", "5000")
    with pytest.raises(SystemExit, match="NOTIFY_INBOX_OUTBOX_BATCH_SIZE is invalid"):
        load(InboxSettings)


def _script() -> str:
    beside = Path(sys.executable).parent / "notify-inbox"
    found = str(beside) if beside.exists() else shutil.which("notify-inbox")
    assert found, "the notify-inbox console script is not installed"
    return found


@pytest.mark.integration
def test_sigterm_drains_the_consumer_and_exits_zero(
    notify_env, settings, publish, notification, token, wait_until, tmp_path
):
    port = free_port()
    env = {
        **os.environ,
        **notify_env,
        "NOTIFY_INBOX_PORT": str(port),
        "NOTIFY_HTTP_HOST": "127.0.0.1",
    }
    log_path = tmp_path / "inbox.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([_script()], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, log_path.read_text()
                return False

        wait_until(ready, timeout=90, what="the inbox ready")  # 4 consumer groups to join
        events = [notification("u-carol") for _ in range(5)]
        publish(events)
        headers = {"Authorization": f"Bearer {token('u-carol')}"}
        wait_until(
            lambda: (
                len(httpx.get(f"{base}/v1/notifications", headers=headers).json()["items"]) == 5
            ),
            what="the notifications in the feed",
        )

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        stop_process(proc)
    assert "consumer stopped" in log_path.read_text()

    # Everything it stored is committed: a replacement would not process it again.
    name = settings.topic(topics.NOTIFICATIONS)
    probe = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.group("notify-inbox")}
    )
    try:
        committed = probe.committed([TopicPartition(name, p) for p in range(6)], timeout=10)
    finally:
        probe.close()
    assert sum(max(tp.offset, 0) for tp in committed) == 5
