"""Fixtures of the security tests: the real inbox and ingest apps on a per-test database
(and topic namespace), in process or served by uvicorn on a local port, and user tokens."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from notify_common.auth import issue_user_token
from notify_common.db.engine import make_engine
from notify_common.testing import infra
from notify_common.testing.infra import Broker
from notify_inbox.app import build_app as build_inbox
from notify_inbox.settings import InboxSettings
from notify_ingest.app import build_app as build_ingest
from notify_ingest.settings import IngestSettings

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"
SERVICE_TOKEN = "security-test-service-token"


def inbox_settings(database_url: str, **overrides: Any) -> InboxSettings:
    """The API alone: no broker needed, consumer and relay off."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": JWT_SECRET,
        "inbox_consumer_enabled": False,
        "inbox_relay_enabled": False,
        **overrides,
    }
    return InboxSettings(**values)


def ingest_settings(broker: Broker, topic_prefix: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": broker.bootstrap,
        "topic_prefix": topic_prefix,
        "service_tokens": f"upstream:{SERVICE_TOKEN}",
        **overrides,
    }
    return IngestSettings(**values)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(inbox_settings(database_url))
    yield eng
    eng.dispose()


@pytest.fixture
def settings(database_url: str) -> InboxSettings:
    # The documented default, named rather than read: NOTIFY_* variables another test left
    # in the environment must not change what these tests check.
    return inbox_settings(database_url, user_rate_limit_per_minute=100)


@pytest.fixture
def inbox(settings: InboxSettings, engine: Engine) -> Iterator[TestClient]:
    """The real inbox app, in process, with the default limits."""
    with TestClient(build_inbox(settings, engine=engine)) as client:
        yield client


@pytest.fixture
def auth(settings: InboxSettings) -> Callable[..., dict[str, str]]:
    """Headers authenticating as `user_id` (admin=True adds the admin role)."""

    def headers(user_id: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_user_token(settings, user_id, **kwargs)}"}

    return headers


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve the app with uvicorn (as `notify_common.http.serve` does) on a free local port;
    yields its base URL once /healthz answers."""
    port = infra.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="app-under-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        infra.wait_for(lambda: _healthy(url), timeout=30, what=f"{url}/healthz")
        yield url
    finally:
        server.should_exit = True
        thread.join(20)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def inbox_url(database_url: str, engine: Engine) -> Iterator[str]:
    """The inbox served over real sockets, limits as configured by default."""
    with served(build_inbox(inbox_settings(database_url), engine=engine)) as url:
        yield url


@pytest.fixture
def ingest_url(broker: Broker, topic_prefix: str, database_url: str) -> Iterator[str]:
    """ingest served over real sockets, publishing to this test's topics, rate limits in
    this test's database."""
    settings = ingest_settings(broker, topic_prefix, database_url=database_url)
    with served(build_ingest(settings)) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The security cases belong to the reliability suite (make test-reliability) too."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)
