"""Rate limits as clients meet them: 429 with Retry-After per user on the inbox and the
realtime stream (one budget for both), per service on ingest, shared by every replica."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from notify_common.auth import issue_user_token
from notify_common.db.engine import make_engine
from notify_common.ratelimit import RateLimiter
from notify_common.testing.infra import Broker
from notify_inbox.app import build_app as build_inbox
from notify_inbox.settings import InboxSettings
from notify_ingest.app import build_app as build_ingest
from notify_ingest.settings import IngestSettings
from notify_realtime.feedstore import FeedStore
from notify_realtime.hub import Hub
from notify_realtime.recent import RecentIndex
from notify_realtime.settings import RealtimeSettings
from notify_realtime.stream import StreamEndpoint

from .conftest import JWT_SECRET, SERVICE_TOKEN, inbox_settings, ingest_settings

pytestmark = pytest.mark.integration

FEED = "/v1/notifications/unread-count"
HELD_S = 600


def assert_refused(resp: Any, *, window_s: int = 60) -> None:
    assert resp.status_code == 429, resp.text
    assert 1 <= int(resp.headers["Retry-After"]) <= window_s
    assert "rate limit exceeded" in resp.json()["detail"]


def hold_window(engine: Engine, key: str, *, seconds: int = HELD_S) -> None:
    """Open `key`'s window now, for longer than the minute: a hundred requests on a busy
    machine must not outlast the window they are meant to fill."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO rate_limits (key, window_end, hits)"
                " VALUES (:key, now() + make_interval(secs => :s), 0)"
            ),
            {"key": key, "s": seconds},
        )


def window_left_s(engine: Engine, key: str) -> float:
    with engine.connect() as conn:
        return float(
            conn.execute(
                text(
                    "SELECT EXTRACT(EPOCH FROM window_end - now()) FROM rate_limits"
                    " WHERE key = :key"
                ),
                {"key": key},
            ).scalar_one()
        )


def test_the_default_limits() -> None:
    for cls in (InboxSettings, RealtimeSettings):
        assert cls.model_fields["user_rate_limit_per_minute"].default == 100
    assert IngestSettings.model_fields["ingest_rate_limit_per_minute"].default == 60_000


def test_a_users_window_is_a_minute(inbox: TestClient, engine: Engine, auth) -> None:
    assert inbox.get(FEED, headers=auth("u-carol")).status_code == 200
    assert 50 < window_left_s(engine, "user:u-carol") <= 60


def test_a_user_gets_100_requests_a_minute_then_429(
    inbox: TestClient, engine: Engine, auth
) -> None:
    hold_window(engine, "user:u-alice")
    alice = auth("u-alice")
    statuses = [inbox.get(FEED, headers=alice).status_code for _ in range(100)]
    assert statuses == [200] * 100
    assert_refused(inbox.get(FEED, headers=alice), window_s=HELD_S)
    # Any endpoint of the user API: the budget is the user's, not the route's.
    assert_refused(inbox.get("/v1/preferences", headers=alice), window_s=HELD_S)
    # Another user is not affected, and neither are health checks.
    assert inbox.get(FEED, headers=auth("u-bob")).status_code == 200
    assert inbox.get("/healthz").status_code == 200


@pytest.fixture
def replicas(database_url: str) -> Iterator[list[TestClient]]:
    """Two inbox replicas: separate apps and connection pools, one database."""
    settings = inbox_settings(database_url, user_rate_limit_per_minute=10)
    engines = [make_engine(settings) for _ in range(2)]
    clients = [TestClient(build_inbox(settings, engine=e)) for e in engines]
    for c in clients:
        c.__enter__()
    yield clients
    for c in clients:
        c.__exit__(None, None, None)
    for e in engines:
        e.dispose()


def test_replicas_share_a_users_budget(replicas: list[TestClient], auth) -> None:
    one, two = replicas
    alice = auth("u-alice")
    ok = [one.get(FEED, headers=alice).status_code for _ in range(6)]
    ok += [two.get(FEED, headers=alice).status_code for _ in range(4)]
    assert ok == [200] * 10
    assert_refused(one.get(FEED, headers=alice))
    assert_refused(two.get(FEED, headers=alice))


def test_opening_the_stream_counts_against_the_same_budget(
    database_url: str, engine: Engine, inbox: TestClient, auth
) -> None:
    settings = RealtimeSettings(
        database_url=database_url, jwt_secret=JWT_SECRET, user_rate_limit_per_minute=100
    )
    hub = Hub(queue_max=10, write_timeout_s=1, heartbeat_s=15)
    endpoint = StreamEndpoint(
        settings=settings,
        hub=hub,
        recent=RecentIndex(window_s=60, max_users=10),
        store=FeedStore(engine),
        limiter=RateLimiter(engine, service="realtime", limit=settings.user_rate_limit_per_minute),
    )
    hold_window(engine, "user:u-alice")
    for _ in range(100):
        assert inbox.get(FEED, headers=auth("u-alice")).status_code == 200
    # The instance is draining, so a stream the limiter lets through ends with 503 at once:
    # enough to tell an allowed connect from a refused one without holding a stream open.
    hub.begin_shutdown()

    def open_stream(user: str) -> tuple[int, dict[bytes, bytes]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        token = issue_user_token(settings, user)
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/stream",
            "query_string": f"token={token}".encode(),
            "headers": [],
        }
        asyncio.run(endpoint(scope, receive, send))
        return sent[0]["status"], dict(sent[0]["headers"])

    status, headers = open_stream("u-alice")
    assert status == 429
    assert 1 <= int(headers[b"retry-after"]) <= HELD_S
    assert open_stream("u-bob")[0] == 503  # through the limiter


MESSAGE = {
    "message_id": "m-1",
    "server_id": "s-1",
    "channel_id": "c-1",
    "sender_id": "u-1",
    "sender_name": "Alice",
    "content": "hello",
}


def test_ingest_limits_each_service_across_replicas(
    broker: Broker, topic_prefix: str, database_url: str
) -> None:
    settings = ingest_settings(
        broker,
        topic_prefix,
        database_url=database_url,
        service_tokens=f"upstream:{SERVICE_TOKEN},other:other-token",
        ingest_rate_limit_per_minute=4,
    )
    upstream = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    with TestClient(build_ingest(settings)) as one, TestClient(build_ingest(settings)) as two:
        statuses = [
            c.post("/v1/messages", json=MESSAGE, headers=upstream).status_code
            for c in (one, two, one, two)
        ]
        assert statuses == [202] * 4
        assert_refused(one.post("/v1/messages", json=MESSAGE, headers=upstream))
        assert_refused(two.put("/v1/users/u-9", json={"display_name": "N"}, headers=upstream))
        # Another service has its own budget; a bad token is a 401, never a 429.
        other = {"Authorization": "Bearer other-token"}
        assert one.post("/v1/messages", json=MESSAGE, headers=other).status_code == 202
        bad = {"Authorization": "Bearer nope"}
        assert one.post("/v1/messages", json=MESSAGE, headers=bad).status_code == 401


def test_ingest_without_a_database_is_not_limited(broker: Broker, topic_prefix: str) -> None:
    settings = ingest_settings(
        broker, topic_prefix, database_url=None, ingest_rate_limit_per_minute=1
    )
    upstream = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    with TestClient(build_ingest(settings)) as client:
        statuses = [
            client.post("/v1/messages", json=MESSAGE, headers=upstream).status_code
            for _ in range(3)
        ]
    assert statuses == [202] * 3
