"""End to end with every service as a process: a browser-like subscriber saves its
subscription through the inbox, a message posted to ingest is fanned out, and push-sender
delivers it to the local push service, which decrypts it. Then push-sender is killed with
SIGKILL mid-batch and restarted: every push arrives, none twice to the same subscription.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from notify_common.auth import issue_user_token
from notify_common.db.engine import normalize_url
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings, UserAuthSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.pytest_plugin import new_database
from notify_common.testing.pytest_plugin import test_env as notify_env_for
from notify_push_sender import message
from notify_push_sender.testing import PushReceiver, Subscriber
from notify_schemas.models import notification_id_for

pytestmark = pytest.mark.e2e

SERVICE_TOKEN = "test-service-token"
OUTPUT = Path(__file__).resolve().parents[3] / "test-output" / "e2e" / "push"


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, ServiceProcess] = {}
        self.auth = UserAuthSettings(jwt_secret=env["NOTIFY_JWT_SECRET"])
        self.db = create_engine(normalize_url(env["NOTIFY_DATABASE_URL"]))

    def start(self, name: str) -> ServiceProcess:
        log = OUTPUT / f"{name}-{len(self.procs)}-{time.monotonic_ns()}.log"
        proc = ServiceProcess(SERVICES[name], self.env, infra.free_port(), log).start()
        self.procs[name] = proc
        return proc

    def client(self, name: str, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.procs[name].url,
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )

    def ingest(self) -> httpx.Client:
        return self.client("ingest", SERVICE_TOKEN)

    def user(self, user_id: str) -> httpx.Client:
        return self.client("inbox", issue_user_token(self.auth, user_id))

    def metric(self, service: str, name: str, labels: str | None = None) -> float:
        body = httpx.get(self.procs[service].url + "/metrics", timeout=5).text
        pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
        return sum(
            float(m.group(2))
            for m in pattern.finditer(body)
            if labels is None or (m.group(1) and labels in m.group(1))
        )

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()
        self.db.dispose()


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[PushReceiver]:
    with PushReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def stack(broker, postgres_server, fast_env) -> Iterator[Stack]:
    name, db_url = new_database(postgres_server)
    prefix = f"p{uuid.uuid4().hex[:8]}."
    ensure_topics(CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix))
    env = {
        **notify_env_for(broker=broker, database_url=db_url, topic_prefix=prefix),
        **fast_env,
        "NOTIFY_SERVICE_TOKENS": f"upstream:{SERVICE_TOKEN}",
    }
    s = Stack(env)
    try:
        for service in ("ingest", "inbox", "fanout", "push-sender"):
            s.start(service)
        for p in s.procs.values():
            p.wait_ready(timeout=120)
        yield s
    finally:
        s.stop()
        postgres_server.drop_database(name)


def directory(stack: Stack, server: str, users: list[str]) -> None:
    with stack.ingest() as ingest:
        for uid in users:
            r = ingest.put(f"/v1/users/{uid}", json={"display_name": uid.title(), "entitled": True})
            assert r.status_code == 202, r.text
            r = ingest.put(
                f"/v1/servers/{server}/members/{uid}", json={"server_name": "Push Server"}
            )
            assert r.status_code == 202, r.text


def subscribe(stack: Stack, user_id: str, sub: Subscriber) -> str:
    with stack.user(user_id) as c:
        r = c.post("/v1/push/subscriptions", json={**sub.subscription(), "device": {"name": "t"}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_a_posted_message_arrives_decrypted_at_the_push_service(
    stack: Stack, receiver: PushReceiver, vapid_pair
):
    with stack.user("bob") as c:
        assert c.get("/v1/push/public-key").json() == {"public_key": vapid_pair[1]}
    bob, carol = receiver.subscribe("e2e-bob"), receiver.subscribe("e2e-carol")
    subscribe(stack, "bob", bob)
    subscribe(stack, "carol", carol)
    directory(stack, "push-srv", ["alice", "bob", "carol"])
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_table_entries", 'table="members"') >= 3,
        timeout=60,
        what="members in the fanout",
    )
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": "push-m1",
                "server_id": "push-srv",
                "channel_id": "general",
                "sender_id": "alice",
                "sender_name": "Alice",
                "content": "hello push",
                "mentions": ["carol"],
                "server_name": "Push Server",
                "channel_name": "general",
            },
        )
        assert r.status_code == 202, r.text
    wait_until(
        lambda: receiver.delivered("e2e-bob") and receiver.delivered("e2e-carol"),
        timeout=60,
        what="both pushes",
    )
    [to_bob] = receiver.delivered("e2e-bob")
    [to_carol] = receiver.delivered("e2e-carol")
    for push in (to_bob, to_carol):
        assert push.vapid_error is None, push.vapid_error
        assert push.decrypt_error is None, push.decrypt_error
        assert push.headers["Content-Encoding"] == "aes128gcm"
        assert 86_000 < int(push.headers["TTL"]) <= 86_400

    bob_id = notification_id_for("push-m1", "bob")
    assert to_bob.message is not None
    timestamp = to_bob.message["data"].pop("timestamp")
    assert abs(timestamp / 1000 - time.time()) < 120
    assert to_bob.message == {
        "title": "New message in Push Server #general",
        "body": "Alice: hello push",
        "icon": "/app/push/icon-192.png",
        "badge": "/app/push/badge-72.png",
        "data": {
            "url": "/servers/push-srv/channels/general",
            "notification_id": str(bob_id),
            "type": "NEW_MESSAGE",
            # The shipped NEW_MESSAGE template's buttons and where each leads.
            "actions": {
                "a0": "/servers/push-srv/channels/general",
                "a1": f"/app/?mark_read={bob_id}",
            },
        },
        "requireInteraction": False,
        "tag": "channel:push-srv/general",
        "renotify": True,
        "actions": [
            {"action": "a0", "title": "Open"},
            {"action": "a1", "title": "Mark as read"},
        ],
    }
    assert to_bob.headers["Urgency"] == "normal"
    assert to_bob.headers["Topic"] == message._topic("channel:push-srv/general")

    carol_id = notification_id_for("push-m1", "carol")
    assert to_carol.message is not None
    assert to_carol.message["data"]["type"] == "MENTION"
    assert to_carol.message["requireInteraction"] is True
    assert to_carol.message["tag"] == f"notification:{carol_id}"
    assert to_carol.headers["Urgency"] == "high"
    assert to_carol.headers["Topic"] == message._topic(f"notification:{carol_id}")

    # The sender is never notified, so never pushed to.
    assert not receiver.received("e2e-alice")
    # The private key never reaches a log line.
    log = stack.procs["push-sender"].log_path.read_text()
    assert "push-sender started" in log
    assert stack.env["NOTIFY_VAPID_PRIVATE_KEY"] not in log


MEMBERS = [f"crash-{i:02d}" for i in range(12)]
SENDER = "crash-sender"
MESSAGES = 40


@pytest.mark.reliability
def test_sigkill_mid_batch_every_push_arrives_once(stack: Stack, receiver: PushReceiver):
    subscribers = {}
    for uid in MEMBERS:
        for browser in ("a", "b"):
            sub = receiver.subscribe(f"{uid}-{browser}")
            subscribe(stack, uid, sub)
            subscribers[sub.token] = uid
    members_before = stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
    directory(stack, "crash-srv", [SENDER, *MEMBERS])
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
            >= members_before + len(MEMBERS) + 1
        ),
        timeout=60,
        what="members in the fanout",
    )
    posted = 0

    def post_all() -> None:
        nonlocal posted
        with stack.ingest() as ingest:
            for i in range(MESSAGES):
                r = ingest.post(
                    "/v1/messages",
                    json={
                        "message_id": f"crash-m{i}",
                        "server_id": "crash-srv",
                        "channel_id": "c",
                        "sender_id": SENDER,
                        "sender_name": "S",
                        "content": f"#{i}",
                    },
                )
                assert r.status_code == 202, r.text
                posted += 1
                time.sleep(0.15)  # a steady stream, still flowing when the kill lands

    def delivered() -> int:
        return len([r for r in receiver.delivered() if r.token in subscribers])

    def recorded() -> int:
        with stack.db.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM push_deliveries"
                        " WHERE state = 'sent' AND user_id LIKE 'crash-%'"
                    )
                ).scalar_one()
            )

    poster = threading.Thread(target=post_all)
    poster.start()
    # Let a good part through, then hold the push service's answers: pushes pile up in
    # flight. Kill once everything answered so far is recorded, i.e. while the in-flight
    # pushes are unanswered and the notifications behind them are queued or unconsumed.
    wait_until(lambda: delivered() >= 100, timeout=60, what="the first pushes")
    receiver.hold()
    wait_until(lambda: receiver.waiting >= 10, timeout=30, what="pushes in flight")
    wait_until(lambda: recorded() >= delivered(), timeout=30, what="answered pushes to be recorded")
    delivered_at_kill = delivered()
    stack.procs["push-sender"].kill()
    in_flight_at_kill = receiver.waiting
    receiver.release()  # the killed sender's connections are gone: none of these counts
    assert in_flight_at_kill > 0 and posted < MESSAGES, "the kill must land mid-stream"

    restarted = stack.start("push-sender")
    restarted.wait_ready(timeout=60)
    poster.join()

    expected = len(MEMBERS) * 2 * MESSAGES

    def crash_pushes() -> list[str]:
        return [
            f"{r.token}:{r.message['data']['notification_id']}"
            for r in receiver.delivered()
            if r.token in subscribers and r.message
        ]

    wait_until(lambda: len(set(crash_pushes())) >= expected, timeout=120, what="every push")
    time.sleep(2)  # let a late duplicate show itself
    seen = Counter(crash_pushes())
    duplicates = {k: n for k, n in seen.items() if n > 1}
    assert not duplicates, f"pushed twice: {list(duplicates)[:5]}"
    assert len(seen) == expected
    for token, uid in subscribers.items():
        got = {key.split(":", 1)[1] for key in seen if key.startswith(f"{token}:")}
        assert got == {str(notification_id_for(f"crash-m{i}", uid)) for i in range(MESSAGES)}
    assert 0 < delivered_at_kill < expected
