"""An operator asks what became of a message: the admin status (fanout summary, suppressions
by reason, per-channel deliveries) agrees with what the users' feeds hold and what the push
service received, and every service's metrics moved by exactly as much. The suppression log
names exactly who was not notified (a muted, two non-entitled and a mentions-only member)
or was notified on fewer channels, and why, per message and per user.

Five services run as processes (the conftest's Stack): ingest, fanout, inbox, push-sender
(against a local push service) and email-digest (digest held, no scheduler), so every
channel records real outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings
from notify_common.testing import infra
from notify_common.testing.pytest_plugin import new_database
from notify_common.testing.pytest_plugin import test_env as service_env
from notify_common.webpush import generate_vapid_private_key
from notify_email_digest.sink import MailSink
from notify_push_sender.testing import PushReceiver, Subscriber
from tests.e2e.conftest import OUTPUT, SERVICE_TOKEN, Stack, wait_until

pytestmark = pytest.mark.e2e

SERVICES = ("ingest", "inbox", "fanout", "push-sender", "email-digest")


@pytest.fixture(scope="module")
def receiver() -> Iterator[PushReceiver]:
    with PushReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def ops_stack(broker, postgres_server, receiver: PushReceiver) -> Iterator[Stack]:
    name, db_url = new_database(postgres_server)
    prefix = f"a{uuid.uuid4().hex[:8]}."
    ensure_topics(CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix))
    vapid_private, vapid_public = generate_vapid_private_key()
    sink = MailSink(port=infra.free_port()).start()
    env = {
        **service_env(broker=broker, database_url=db_url, topic_prefix=prefix),
        "NOTIFY_SERVICE_TOKENS": f"upstream:{SERVICE_TOKEN}",
        "NOTIFY_VAPID_PRIVATE_KEY": vapid_private,
        "NOTIFY_VAPID_PUBLIC_KEY": vapid_public,
        "NOTIFY_VAPID_SUBJECT": "mailto:ops@example.test",
        "NOTIFY_PUSH_DEV_HOSTS": "127.0.0.1",
        "NOTIFY_PUSH_POLL_INTERVAL_S": "0.1",
        "NOTIFY_SMTP_URL": sink.url,
        "NOTIFY_EMAIL_FROM": "Notify <notify@example.test>",
        "NOTIFY_DIGEST_SCHEDULER_ENABLED": "false",
    }
    stack = Stack(env, OUTPUT / "e2e" / "test_admin_status")
    try:
        for service in SERVICES:
            stack.start(service)
        for p in stack.procs.values():
            p.wait_ready(timeout=120)
        yield stack
    finally:
        stack.stop_all()
        sink.stop()
        postgres_server.drop_database(name)


SERVER = "srv-ops"
CHANNEL = "announcements"
MESSAGE = "m-status-1"

# user_id: (is_admin, entitled)
USERS = {
    "sender": (False, True),
    "paid-1": (False, True),
    "paid-2": (False, True),
    "paid-3": (False, True),
    "boss": (True, False),  # admins are told without a subscription
    "free-1": (False, False),
    "free-2": (False, False),
    "muted": (False, True),  # channel level none
    "mentions-only": (False, True),  # channel level mentions, not mentioned
    "outsider": (False, True),  # not a member: never a candidate
}
MEMBERS = [u for u in USERS if u != "outsider"]
RECIPIENTS = {"paid-1", "paid-2", "paid-3", "boss"}
SUPPRESSED = {"sender": 1, "not_entitled": 2, "channel_muted": 1, "not_mentioned": 1}
# Who is in the suppression log, and why (the sender is counted, never a candidate).
SUPPRESSED_USERS = {
    "free-1": "not_entitled",
    "free-2": "not_entitled",
    "muted": "channel_muted",
    "mentions-only": "not_mentioned",
}
# Recipients with a browser subscribed to push; the others have none.
PUSH_USERS = {"paid-1", "paid-2"}


def in_feed(stack: Stack, user_id: str) -> bool:
    with stack.user(user_id) as c:
        r = c.get("/v1/notifications", params={"limit": 100})
        assert r.status_code == 200, r.text
        return any(n["metadata"].get("message_id") == MESSAGE for n in r.json()["items"])


def test_message_status_matches_the_feeds_and_the_metrics(ops_stack: Stack, receiver: PushReceiver):
    stack = ops_stack
    with stack.ingest() as ingest:
        for uid, (admin, entitled) in USERS.items():
            r = ingest.put(
                f"/v1/users/{uid}",
                json={"display_name": uid.title(), "is_admin": admin, "entitled": entitled},
            )
            assert r.status_code == 202, r.text
        for uid in MEMBERS:
            r = ingest.put(f"/v1/servers/{SERVER}/members/{uid}", json={})
            assert r.status_code == 202, r.text
    subs: dict[str, Subscriber] = {}
    for uid in sorted(PUSH_USERS):
        subs[uid] = receiver.subscribe(f"{uid}-{uuid.uuid4().hex[:6]}")
        with stack.user(uid) as c:
            r = c.post("/v1/push/subscriptions", json=subs[uid].subscription())
            assert r.status_code == 201, r.text
    for uid, level in (("muted", "none"), ("mentions-only", "mentions")):
        with stack.user(uid) as c:
            assert c.put(f"/v1/channels/{CHANNEL}/preference", json={"level": level}).is_success
    for table, expected in (
        ("users", len(USERS)),
        ("members", len(MEMBERS)),
        ("channel_levels", 2),
    ):
        wait_until(
            lambda t=table, n=expected: (
                stack.metric("fanout", "notify_fanout_table_entries", f'table="{t}"') == n
            ),
            timeout=60,
            what=f"{table} in the fanout",
        )

    accepted = stack.metric("ingest", "notify_ingest_accepted_total", 'kind="message"')
    recipients_before = stack.metric("fanout", "notify_fanout_recipients_total")
    persisted_before = stack.metric("inbox", "notify_inbox_persisted_total")
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": MESSAGE,
                "server_id": SERVER,
                "channel_id": CHANNEL,
                "sender_id": "sender",
                "sender_name": "Sender",
                "content": "the quarterly numbers are in",
            },
        )
        assert r.status_code == 202, r.text

    wait_until(
        lambda: (
            stack.metric("inbox", "notify_inbox_persisted_total") - persisted_before
            >= len(RECIPIENTS)
        ),
        timeout=60,
        what="the notifications in the feeds",
    )
    with stack.user("ops", admin=True) as admin:

        def status() -> dict | None:
            r = admin.get(f"/v1/admin/messages/{MESSAGE}")
            if r.status_code in (404, 429):  # not known yet / polled past the rate limit
                return None
            assert r.status_code == 200, r.text
            body = r.json()
            return body if body["fanout"] is not None else None

        def delivered() -> bool:
            body = status()
            return body is not None and all(ch["pending"] == 0 for ch in body["channels"].values())

        # Delivered: the fanout's summary is in and no channel has a pending delivery.
        wait_until(delivered, timeout=60, what="every delivery of the message")
        body = status()
        assert body is not None
        stats = admin.get("/v1/admin/stats").json()["windows"]["15m"]

    # The admin's numbers are the feeds' numbers.
    with_message = {uid for uid in USERS if in_feed(stack, uid)}
    assert with_message == RECIPIENTS
    assert body["fanout"]["kind"] == "message"
    assert body["fanout"]["recipients"] == len(with_message)
    assert body["fanout"]["suppressed"] == SUPPRESSED
    assert body["fanout"]["suppressed_total"] == sum(SUPPRESSED.values())
    assert body["notifications"] == len(with_message)
    in_app = body["channels"]["in_app"]
    assert in_app["listed"] == in_app["sent"] == len(with_message)
    assert in_app["pending"] == 0
    # Push: sent to each subscribed browser (the push service has them), suppressed for
    # recipients without a subscription. Email: a normal message waits for the digest.
    received = {uid for uid, sub in subs.items() if receiver.delivered(sub.token)}
    assert received == PUSH_USERS
    assert body["channels"]["push"] == {
        "listed": len(with_message),
        "sent": len(received),
        "failed": 0,
        "deferred": 0,
        "suppressed": len(with_message - received),
        "pending": 0,
    }
    assert body["channels"]["email"] == {
        "listed": len(with_message),
        "sent": 0,
        "failed": 0,
        "deferred": len(with_message),
        "suppressed": 0,
        "pending": 0,
    }

    # Every service counted the same message.
    assert stack.metric("ingest", "notify_ingest_accepted_total", 'kind="message"') == accepted + 1
    assert stack.metric("fanout", "notify_fanout_recipients_total") - recipients_before == len(
        RECIPIENTS
    )
    for reason, n in SUPPRESSED.items():
        assert (
            stack.metric("fanout", "notify_fanout_suppressed_total", f'reason="{reason}"') == n
        ), reason
    assert stack.metric("inbox", "notify_inbox_persisted_total") - persisted_before == len(
        RECIPIENTS
    )
    assert stack.metric("inbox", "notify_admin_fanout_results_total", 'kind="message"') == 1
    assert stack.metric("push-sender", "notify_push_attempts_total", 'outcome="sent"') == len(
        PUSH_USERS
    )
    assert stack.metric("email-digest", "notify_email_deferred_total", 'reason="digest"') == len(
        RECIPIENTS
    )
    assert stack.metric("inbox", "notify_deliveries_total", 'channel="push"') == len(RECIPIENTS)
    assert stats["deliveries"]["push"]["sent"]["total"] == len(PUSH_USERS)
    assert stats["deliveries"]["email"]["deferred"]["total"] == len(RECIPIENTS)
    assert stats["fanout_source_events"]["total"] == 1
    assert stats["fanout_recipients"]["total"] == len(RECIPIENTS)
    assert stats["notifications_persisted"]["total"] == len(RECIPIENTS)

    # Only admins may ask.
    with stack.user("paid-1") as c:
        assert c.get(f"/v1/admin/messages/{MESSAGE}").status_code == 403
        assert c.get(f"/v1/admin/messages/{MESSAGE}/suppressions").status_code == 403
        assert c.get("/v1/admin/users/paid-1/suppressions").status_code == 403

    # The suppression log: the fanout's decisions (channel None: not notified at all) and
    # the channels' (push dropped without a subscription, email held for the digest).
    expected = {(uid, None, "suppressed", reason) for uid, reason in SUPPRESSED_USERS.items()}
    expected |= {
        (uid, "push", "suppressed", "no active push subscription")
        for uid in RECIPIENTS - PUSH_USERS
    }
    expected |= {(uid, "email", "deferred", "held for the daily digest") for uid in RECIPIENTS}
    # Another admin: "ops" may have polled the status up to its request rate limit.
    with stack.user("ops-log", admin=True) as admin:

        def logged() -> list[dict] | None:
            r = admin.get(f"/v1/admin/messages/{MESSAGE}/suppressions", params={"limit": 500})
            if r.status_code == 429:
                return None
            assert r.status_code == 200, r.text
            items: list[dict] = r.json()["items"]
            got = {(i["user_id"], i["channel"], i["outcome"], i["reason"]) for i in items}
            return items if got == expected else None

        wait_until(lambda: logged() is not None, timeout=60, what="the message's suppression log")
        items = logged()
        assert items is not None and len(items) == len(expected)  # one row per decision
        assert {(i["source_id"], i["kind"], i["server_id"], i["channel_id"]) for i in items} == {
            (MESSAGE, "message", SERVER, CHANNEL)
        }

    # Per user: exactly the suppressed members, each with their reason; never the sender
    # (not a candidate) or a member who was told on every channel they have.
    with stack.user("ops-users", admin=True) as admin:
        for uid in USERS:
            r = admin.get(f"/v1/admin/users/{uid}/suppressions")
            assert r.status_code == 200, r.text
            fanout_level = [
                (i["source_id"], i["reason"]) for i in r.json()["items"] if i["channel"] is None
            ]
            want = [(MESSAGE, SUPPRESSED_USERS[uid])] if uid in SUPPRESSED_USERS else []
            assert fanout_level == want, uid
