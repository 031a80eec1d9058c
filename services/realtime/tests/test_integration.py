"""The realtime service on the real broker and PostgreSQL, over real sockets.

The test plays the fanout (it produces NotificationCreated to the test's topic) and the inbox
(it writes the feed rows, sometimes late on purpose); the service runs in-process under
uvicorn, except for the shutdown test, which runs the console script as a process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, Table, insert

from notify_common.auth import issue_user_token
from notify_common.db.engine import make_engine
from notify_common.db.models import Notification
from notify_common.kafka.producer import EventProducer
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.sse import SSEClient
from notify_realtime.app import RealtimeApp, build_app
from notify_realtime.settings import RealtimeSettings
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationCreated, ReadStateChanged

from .conftest import notification

pytestmark = pytest.mark.integration

_table = cast(Table, Notification.__table__)


@dataclass
class Realtime:
    url: str
    app: RealtimeApp
    settings: RealtimeSettings
    producer: EventProducer
    engine: Engine

    def token(self, user_id: str) -> str:
        return issue_user_token(self.settings, user_id)

    def stream(self, user_id: str, **kw: Any) -> SSEClient:
        client = SSEClient(f"{self.url}/v1/stream", params={"token": self.token(user_id)}, **kw)
        return client

    def publish(self, *items: dict[str, Any]) -> None:
        """As the fanout does: one NotificationCreated per recipient, ce_id = its id."""
        for item in items:
            event = NotificationCreated.model_validate(item)
            value, headers = envelope.encode(
                event,
                ce_type="io.notify.NotificationCreated",
                source="/tests",
                event_id=str(event.notification_id),
            )
            self.producer.produce(
                self.settings.topic(topics.NOTIFICATIONS),
                key=event.user_id,
                value=value,
                headers=headers,
            )
        self.producer.flush()

    def persist(self, *items: dict[str, Any]) -> None:
        """As the inbox does: feed rows in arrival order."""
        with self.engine.begin() as conn:
            for item in items:
                event = NotificationCreated.model_validate(item)
                conn.execute(
                    insert(_table).values(
                        notification_id=event.notification_id,
                        user_id=event.user_id,
                        type=event.type,
                        title=event.title,
                        body=event.body,
                        action_url=event.action_url,
                        metadata=event.metadata.model_dump(mode="json"),
                        priority=event.priority,
                        critical=event.critical,
                        channels=list(event.channels),
                        created_at=event.created_at,
                    )
                )

    def wait_seen(self, user_id: str, notification_id: str, timeout: float = 10) -> None:
        """Until the service's consumer has read the notification."""
        recent = self.app.api.state.recent
        deadline = time.monotonic() + timeout
        while recent.last_seen(user_id) != notification_id:
            assert time.monotonic() < deadline, "realtime did not consume the notification"
            time.sleep(0.02)

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and labels in line and not line.startswith("#"):
                metric_name = line.split("{")[0].split(" ")[0]
                if metric_name == name:
                    total += float(line.rsplit(" ", 1)[1])
        return total


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **kw: Any) -> RealtimeSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return RealtimeSettings(**kw)  # type: ignore[call-arg]


@pytest.fixture
def realtime_factory(
    notify_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Realtime]]:
    started: list[tuple[uvicorn.Server, threading.Thread, EventProducer, Engine]] = []

    def start(**overrides: Any) -> Realtime:
        settings = _settings(notify_env, monkeypatch, **overrides)
        engine = make_engine(settings)
        app = build_app(settings, engine=engine)
        port = infra.free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="realtime-under-test", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        infra.wait_for(lambda: _ready(url), timeout=30, what="realtime /readyz")
        producer = EventProducer(settings)
        started.append((server, thread, producer, engine))
        return Realtime(url=url, app=app, settings=settings, producer=producer, engine=engine)

    yield start
    for server, thread, producer, engine in started:
        server.should_exit = True
        thread.join(20)
        producer.close()
        engine.dispose()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _titles(events) -> list[str]:
    import orjson

    return [orjson.loads(e.data)["title"] for e in events if e.event == "notification"]


def test_two_users_connected_each_receives_only_their_own(realtime_factory):
    rt = realtime_factory()
    with rt.stream("alice").connect() as alice, rt.stream("bob").connect() as bob:
        alice.take("unread-count")
        bob.take("unread-count")
        for_alice = notification("alice", title="for alice")
        rt.publish(for_alice)
        [event] = alice.take("notification")
        assert event.id == for_alice["notification_id"]
        assert _titles([event]) == ["for alice"]
        assert _titles(bob.drain(1.0)) == []

        rt.publish(notification("bob", title="for bob"))
        assert _titles(bob.take("notification")) == ["for bob"]
        assert _titles(alice.drain(1.0)) == []
    assert rt.metric("notify_realtime_events_sent_total", 'type="notification"') == 2


def test_a_reconnect_with_last_event_id_receives_exactly_the_missed_three_in_order(
    realtime_factory,
):
    rt = realtime_factory(realtime_resume_wait_s=10)
    first = notification("alice", title="first")
    with rt.stream("alice").connect() as client:
        rt.publish(first)
        rt.persist(first)
        [event] = client.take("notification")
    last_event_id = event.id

    missed = [notification("alice", title=f"missed {i}") for i in range(3)]
    rt.publish(*missed)
    rt.wait_seen("alice", missed[-1]["notification_id"])
    # The inbox stores them only a moment after the client is back: they went by live
    # while nobody listened, and the feed does not have them yet when the client resumes.
    late_writer = threading.Timer(1.0, rt.persist, args=missed)
    late_writer.start()
    try:
        with rt.stream("alice", last_event_id=last_event_id).connect() as client:
            replayed = client.take("notification", 3, timeout=15)
            assert _titles(replayed) == ["missed 0", "missed 1", "missed 2"]
            assert [e.id for e in replayed] == [m["notification_id"] for m in missed]
            client.take("unread-count")
            rt.publish(notification("alice", title="live again"))
            assert _titles(client.drain(1.5)) == ["live again"]  # nothing repeated
    finally:
        late_writer.join()
    assert rt.metric("notify_realtime_backfilled_total") == 3


def test_read_state_changes_reach_every_tab_of_the_user(realtime_factory):
    rt = realtime_factory()
    nid = uuid.uuid4()
    with rt.stream("alice").connect() as tab1, rt.stream("alice").connect() as tab2:
        tab1.take("unread-count")
        tab2.take("unread-count")
        change = ReadStateChanged(
            change_id=uuid.uuid4(),
            user_id="alice",
            scope="one",
            notification_id=nid,
            read=True,
            unread_count=2,
            changed_at=datetime.now(UTC),
        )
        value, headers = envelope.encode(change, ce_type="io.notify.ReadStateChanged", source="/t")
        rt.producer.produce(
            rt.settings.topic(topics.READ_STATE), key="alice", value=value, headers=headers
        )
        rt.producer.flush()
        for tab in (tab1, tab2):
            [read] = tab.take("read")
            assert str(nid) in read.data and read.id is None
            [count] = tab.take("unread-count")
            assert count.data == '{"unread":2}'


def test_a_client_that_stops_reading_is_told_to_resync_and_disconnected(realtime_factory):
    # The write timeout outlasts the whole test: this test is about the resync event at the
    # end of the stream, not about cutting off a client that never reads (test_hub.py); on a
    # loaded machine the fast stream's 8 MB alone can take longer than 30 s.
    rt = realtime_factory(realtime_queue_max=20, realtime_write_timeout_s=300)
    big = "x" * 8000
    count = 1000  # 8 MB: more than the socket buffers between server and client hold
    slow = rt.stream("alice", recv_buffer=4096).connect(read=False)
    with rt.stream("alice").connect() as fast:
        fast.take("unread-count")
        items = [notification("alice", title=f"n{i}", body=big) for i in range(count)]
        for start in range(0, count, 200):
            rt.publish(*items[start : start + 200])
        # The stream of the same user that keeps up is not held back by the slow one.
        got = fast.take("notification", count, timeout=60)
        assert _titles(got[-1:]) == [f"n{count - 1}"]
    deadline = time.monotonic() + 20
    while rt.metric("notify_realtime_resyncs_total", 'reason="overflow"') < 1:
        assert time.monotonic() < deadline, "the slow stream never overflowed"
        time.sleep(0.1)
    # When it reads again, it finds the resync event at the end of its stream.
    slow.start_reading()
    # Up to several MB were waiting in the socket buffers; drain returns when the stream ends.
    events = slow.drain(180)
    assert slow.ended.is_set(), f"the stream did not end; {len(events)} events read"
    assert events[-1].event == "resync" and '"overflow"' in events[-1].data
    assert len([e for e in events if e.event == "notification"]) < count
    slow.close()


def test_graceful_shutdown_tells_clients_to_reconnect_and_loses_nothing(
    notify_env, tmp_path, realtime_factory, monkeypatch
):
    env = {**notify_env, "NOTIFY_REALTIME_SHUTDOWN_RETRY_SPREAD_MS": "500"}
    first = ServiceProcess(
        SERVICES["realtime"], env, infra.free_port(), tmp_path / "realtime-1.log"
    ).start()
    second: ServiceProcess | None = None
    try:
        first.wait_ready(timeout=60)
        token = issue_user_token(_settings(env, monkeypatch), "alice")
        seen = notification("alice", title="seen")
        # The feed rows are written by a helper instance of the in-process service.
        helper = realtime_factory()
        with SSEClient(f"{first.url}/v1/stream", params={"token": token}).connect() as client:
            client.take("unread-count")
            helper.publish(seen)
            helper.persist(seen)
            [event] = client.take("notification")
            assert first.proc is not None
            first.proc.terminate()  # SIGTERM, as an orchestrator does
            [hint] = client.take("retry", timeout=10)
            assert 250 <= (hint.retry or 0) <= 750
            client.ended.wait(10)
            assert client.ended.is_set(), "the stream was not closed"
        assert first.proc.wait(20) == 0

        # While no instance runs, a notification is produced and stored; the client
        # reconnects to another instance with its Last-Event-ID and gets it.
        during = notification("alice", title="during the restart")
        helper.publish(during)
        helper.persist(during)
        second = ServiceProcess(
            SERVICES["realtime"], env, infra.free_port(), tmp_path / "realtime-2.log"
        ).start()
        second.wait_ready(timeout=60)
        with SSEClient(
            f"{second.url}/v1/stream", params={"token": token}, last_event_id=event.id
        ).connect() as client:
            assert _titles(client.take("notification")) == ["during the restart"]
    finally:
        first.stop()
        if second is not None:
            second.stop()
