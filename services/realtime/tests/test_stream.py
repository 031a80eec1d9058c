"""The stream endpoint at the ASGI level: auth, CORS, the order of a stream's events,
slow clients, shutdown. The feed is in memory; the integration tests use the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from notify_common.auth import issue_user_token
from notify_realtime.hub import Hub
from notify_realtime.recent import RecentIndex
from notify_realtime.settings import RealtimeSettings
from notify_realtime.stream import StreamEndpoint

from .conftest import JWT_SECRET, notification, record
from .fakes import FakeFeed

pytestmark = pytest.mark.anyio

PAGE = "http://page.test"


class Client:
    """Plays the server side of one HTTP connection for the endpoint."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.stalled = asyncio.Event()
        self.stalled.set()
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            await self.stalled.wait()  # a client that stops reading blocks the write
        self.messages.append(message)

    @property
    def status(self) -> int:
        return self.messages[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def finished(self) -> bool:
        last = self.messages[-1] if self.messages else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)

    def events(self) -> list[tuple[str, dict]]:
        out = []
        for block in self.body.split(b"\n\n"):
            fields = dict(
                line.split(b": ", 1)
                for line in block.split(b"\n")
                if b": " in line and not line.startswith(b":")
            )
            if b"event" in fields:
                out.append((fields[b"event"].decode(), orjson.loads(fields[b"data"])))
        return out


def settings(**kw: Any) -> RealtimeSettings:
    return RealtimeSettings(
        database_url="postgresql://unused/unused",
        jwt_secret=JWT_SECRET,
        realtime_cors_origins=PAGE,
        realtime_resume_wait_s=0.2,
        **kw,
    )


class Fixture:
    def __init__(self, **kw: Any) -> None:
        self.settings = settings(**kw)
        self.hub = Hub(
            queue_max=self.settings.realtime_queue_max,
            write_timeout_s=self.settings.realtime_write_timeout_s,
            heartbeat_s=self.settings.realtime_heartbeat_s,
        )
        self.feed = FakeFeed()
        self.recent = RecentIndex(window_s=60, max_users=100)
        self.endpoint = StreamEndpoint(
            settings=self.settings, hub=self.hub, recent=self.recent, store=self.feed
        )

    def token(self, user: str) -> str:
        return issue_user_token(self.settings, user)

    def open(
        self, *, query: str = "", headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[Client, asyncio.Task]:
        client = Client()
        scope = {
            "type": "http",
            "method": method,
            "path": "/v1/stream",
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        task = asyncio.create_task(self.endpoint(scope, client.receive, client.send))
        return client, task


async def until(check, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_stream_needs_a_valid_user_token():
    f = Fixture()
    for query, headers in [
        ("", {}),
        ("token=garbage", {}),
        ("", {"Authorization": "Bearer garbage"}),
        ("", {"Authorization": f"Basic {f.token('alice')}"}),
    ]:
        client, task = f.open(query=query, headers=headers)
        await task
        assert client.status == 401
        assert client.headers[b"www-authenticate"] == b"Bearer"
    assert f.hub.count == 0


async def test_the_token_may_come_as_a_header_or_a_query_parameter():
    f = Fixture()
    a, ta = f.open(headers={"Authorization": f"Bearer {f.token('alice')}"})
    b, tb = f.open(query=f"token={f.token('bob')}")
    await until(lambda: f.hub.count == 2)
    assert a.status == b.status == 200
    assert a.headers[b"content-type"].startswith(b"text/event-stream")
    assert set(f.hub.by_user) == {"alice", "bob"}
    f.hub.begin_shutdown()
    await asyncio.gather(ta, tb)


async def test_the_page_origin_may_open_a_stream_and_others_get_no_cors_headers():
    f = Fixture()
    ok, t1 = f.open(query=f"token={f.token('alice')}", headers={"Origin": PAGE})
    other, t2 = f.open(query=f"token={f.token('alice')}", headers={"Origin": "http://evil.test"})
    pre, t3 = f.open(
        method="OPTIONS",
        headers={"Origin": PAGE, "Access-Control-Request-Method": "GET"},
    )
    await t3
    await until(lambda: f.hub.count == 2)
    assert ok.headers[b"access-control-allow-origin"] == PAGE.encode()
    assert b"access-control-allow-origin" not in other.headers
    assert pre.status == 204
    assert b"last-event-id" in pre.headers[b"access-control-allow-headers"]
    f.hub.begin_shutdown()
    await asyncio.gather(t1, t2)


async def test_a_stream_starts_with_the_retry_delay_and_the_unread_count_then_goes_live():
    f = Fixture(realtime_retry_ms=1500)
    f.feed.persist(notification("alice"))
    f.feed.persist(notification("alice"), read=True)
    client, task = f.open(query=f"token={f.token('alice')}")
    await until(lambda: b"unread-count" in client.body)
    assert client.body.startswith(b"retry: 1500\n\n")
    f.hub.dispatch([record("alice", title="live one"), record("bob", title="not yours")])
    await until(lambda: b"live one" in client.body)
    assert b"not yours" not in client.body
    assert [e for e, _ in client.events()] == ["unread-count", "notification"]
    assert client.events()[0][1] == {"unread": 1}
    client.gone.set()
    await task
    assert f.hub.count == 0


async def test_a_resume_replays_the_missed_notifications_before_live_ones_without_duplicates():
    f = Fixture()
    seen = notification("alice", title="seen")
    missed = [notification("alice", title=f"missed {i}") for i in range(3)]
    for item in [seen, *missed]:
        f.feed.persist(item)
    # The live copy of a replayed notification may still be on its way: it must not repeat.
    client, task = f.open(
        query=f"token={f.token('alice')}&last_event_id=00000000-0000-0000-0000-000000000000",
        headers={"Last-Event-ID": seen["notification_id"]},  # the header wins
    )
    await until(lambda: b"unread-count" in client.body)
    f.hub.dispatch(
        [
            record("alice", notification_id=missed[2]["notification_id"], title="missed 2"),
            record("alice", title="new"),
        ]
    )
    await until(lambda: b'"new"' in client.body)
    titles = [d["title"] for e, d in client.events() if e == "notification"]
    assert titles == ["missed 0", "missed 1", "missed 2", "new"]
    client.gone.set()
    await task


async def test_a_client_that_stops_reading_is_told_to_resync_and_cut_off():
    f = Fixture(realtime_queue_max=5, realtime_write_timeout_s=0.2)
    slow, t_slow = f.open(query=f"token={f.token('alice')}")
    fast, t_fast = f.open(query=f"token={f.token('alice')}")
    await until(lambda: b"unread-count" in slow.body and b"unread-count" in fast.body)
    slow.stalled.clear()
    for i in range(20):
        f.hub.dispatch([record("alice", title=f"n{i}")])
        await asyncio.sleep(0)
    # The other stream of the same user keeps up and gets everything.
    await until(lambda: b'"n19"' in fast.body)
    # The stalled one is given up on, without waiting for it.
    await asyncio.wait_for(t_slow, 2)
    assert f.hub.count == 1
    assert not slow.finished

    # A slow reader that does read again finds the resync event at the end of its stream.
    slow2, t_slow2 = f.open(query=f"token={f.token('alice')}")
    await until(lambda: b"unread-count" in slow2.body)
    slow2.stalled.clear()
    for i in range(20):
        f.hub.dispatch([record("alice", title=f"m{i}")])
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    slow2.stalled.set()
    await asyncio.wait_for(t_slow2, 2)
    assert slow2.finished
    assert slow2.events()[-1] == ("resync", {"reason": "overflow"})
    fast.gone.set()
    await t_fast


async def test_shutdown_tells_clients_when_to_reconnect_and_ends_their_streams():
    f = Fixture(realtime_shutdown_retry_spread_ms=1000)
    client, task = f.open(query=f"token={f.token('alice')}")
    await until(lambda: b"unread-count" in client.body)
    f.hub.begin_shutdown()
    await asyncio.wait_for(task, 2)
    assert client.finished
    tail = client.body.rsplit(b"\n\n", 2)[-2]
    assert tail.startswith(b"retry: ")
    assert 250 <= int(tail.split(b": ")[1]) <= 1250
    late, late_task = f.open(query=f"token={f.token('alice')}")
    await late_task
    assert late.status == 503


def test_the_stream_is_documented_in_openapi():
    from fastapi.testclient import TestClient

    from notify_realtime.app import build_app

    app = build_app(settings())
    spec = TestClient(app.api).get("/openapi.json").json()  # no lifespan: no broker needed
    stream = spec["paths"]["/v1/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {p["name"] for p in stream["parameters"]} == {"token", "last_event_id", "Last-Event-ID"}
