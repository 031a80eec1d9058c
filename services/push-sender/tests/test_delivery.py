"""push-sender against the local push service: the RFC 8030 response matrix, quiet hours,
idempotency, dead letters and the connect-time endpoint guard.

The service runs in-process (its real app: consumer, dispatcher, HTTP client) on the
test's broker namespace and database; notifications are published to its input topic.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from notify_common.testing.kafka import read_topic
from notify_push_sender.app import build_app
from notify_push_sender.testing import PushReceiver, Reply
from notify_schemas import topics

pytestmark = pytest.mark.integration


@pytest.fixture
def sender(settings, engine) -> Iterator[TestClient]:
    with TestClient(build_app(settings, engine=engine)) as client:
        yield client


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_response_matrix(
    sender,
    receiver: PushReceiver,
    add_subscription,
    subscription_state,
    notification,
    publish,
    deliveries,
    wait_until,
    settings,
    vapid_pair,
):
    cases = {
        "ok": [Reply(201)],
        "not-found": [Reply(404)],
        "gone": [Reply(410)],
        "too-large": [Reply(413)],
        "rate-limited": [Reply(429, retry_after="2"), Reply(201)],
        "flaky": [Reply(500), Reply(201)],
        "slow": [Reply(201, delay_s=2.5), Reply(201)],
        "unauthorized": [Reply(401)],
        "bad-request": [Reply(400)],
        "down": [Reply(503)],
    }
    subs = {name: receiver.subscribe(name, script=script) for name, script in cases.items()}
    ids = {name: add_subscription(f"u-{name}", sub) for name, sub in subs.items()}
    auth_before = sample("notify_push_auth_rejected_total")
    sent = {name: notification(f"u-{name}") for name in cases}
    publish(list(sent.values()))

    def outcomes(name: str, count: int) -> list[tuple[str, int]]:
        found = deliveries(count, notification_id=sent[name].notification_id)
        assert all(d.subscription_id == ids[name] for d in found), name
        return [(d.outcome, d.attempt) for d in found]

    # 201: delivered once, decrypted, with valid VAPID and the RFC 8030 headers.
    assert outcomes("ok", 1) == [("sent", 1)]
    [push] = receiver.delivered("ok")
    assert push.vapid_error is None, push.vapid_error
    assert push.vapid_claims and push.vapid_claims["aud"] == receiver.origin
    assert push.decrypt_error is None and push.message is not None
    assert push.message["data"]["notification_id"] == str(sent["ok"].notification_id)
    assert push.headers["Content-Encoding"] == "aes128gcm"
    assert push.headers["Urgency"] == "normal"
    assert 86_300 < int(push.headers["TTL"]) <= 86_400
    assert len(push.headers["Topic"]) <= 32
    assert push.headers["Authorization"].endswith(f"k={vapid_pair[1]}")
    state = subscription_state(ids["ok"])
    assert state["is_active"] and state["failure_count"] == 0 and state["last_active"]

    # 404 and 410: deactivated, no retry.
    for name in ("not-found", "gone"):
        assert outcomes(name, 1) == [("deactivated", 1)]
        state = subscription_state(ids[name])
        assert not state["is_active"] and str(state["deactivated_reason"]).startswith(
            "404" if name == "not-found" else "410"
        )
        assert len(receiver.received(name)) == 1

    # 413: permanent, counted, the subscription is not blamed.
    assert outcomes("too-large", 1) == [("failed", 1)]
    state = subscription_state(ids["too-large"])
    assert state["is_active"] and state["failure_count"] == 0

    # 429 with Retry-After: 2 → the retry comes no sooner than 2 s later.
    assert outcomes("rate-limited", 2) == [("deferred", 1), ("sent", 2)]
    first, second = receiver.received("rate-limited")
    assert second.at - first.at >= 2.0

    # 500 then 201: retried with backoff, delivered.
    assert outcomes("flaky", 2) == [("deferred", 1), ("sent", 2)]
    assert [r.status for r in receiver.received("flaky")] == [500, 201]

    # Timeout (the first answer comes after the 1 s request timeout): retried, delivered once.
    assert outcomes("slow", 2) == [("deferred", 1), ("sent", 2)]
    assert "timeout" in deliveries(2, notification_id=sent["slow"].notification_id)[0].reason
    wait_until(lambda: len(receiver.received("slow")) == 2, what="the abandoned answer")
    # The late answer found its client gone: one push delivered, one abandoned.
    assert sorted(r.answered for r in receiver.received("slow")) == [False, True]
    assert len(receiver.delivered("slow")) == 1

    # 401: counted for alerting, the subscription stays active and unblamed.
    assert outcomes("unauthorized", 1) == [("failed", 1)]
    state = subscription_state(ids["unauthorized"])
    assert state["is_active"] and state["failure_count"] == 0
    assert sample("notify_push_auth_rejected_total") == auth_before + 1

    # Another 4xx: failure_count grows.
    assert outcomes("bad-request", 1) == [("failed", 1)]
    assert subscription_state(ids["bad-request"])["failure_count"] == 1

    # 503 every time: three attempts, then the notification is dead-lettered.
    assert outcomes("down", 3) == [("deferred", 1), ("deferred", 2), ("failed", 3)]
    assert len(receiver.received("down")) == 3
    dlq = [
        m
        for m in read_topic(settings.kafka_bootstrap, settings.topic(topics.DLQ), 1, timeout=10)
        if orjson.loads(m.value())["notification_id"] == str(sent["down"].notification_id)
    ]
    assert len(dlq) == 1
    headers = {k: (v or b"").decode() for k, v in dlq[0].headers()}
    assert headers["dlq_error_class"] == "PushFailed"
    assert headers["push_subscription_id"] == str(ids["down"])
    assert headers["dlq_original_topic"] == settings.topic(topics.NOTIFICATIONS)

    # Nothing was retried that should not have been.
    for name in ("ok", "too-large", "unauthorized", "bad-request"):
        assert len(receiver.received(name)) == 1, name

    # A deactivated subscription is not used again.
    again = notification("u-gone")
    publish([again])
    found = deliveries(1, notification_id=again.notification_id)
    assert [(d.outcome, d.reason) for d in found] == [("suppressed", "no active push subscription")]
    assert len(receiver.received("gone")) == 1


def test_a_redelivered_notification_is_not_pushed_twice(
    sender, receiver, add_subscription, notification, publish, deliveries, wait_until, engine
):
    sub = receiver.subscribe("once")
    other = receiver.subscribe("once-other-browser")
    add_subscription("u-once", sub)
    add_subscription("u-once", other)
    n = notification("u-once")
    publish([n])
    assert len(deliveries(2, notification_id=n.notification_id)) == 2
    duplicates = sample("notify_push_queued_total", {"disposition": "duplicate"})
    publish([n, n])  # a redelivery, twice
    wait_until(
        lambda: sample("notify_push_queued_total", {"disposition": "duplicate"}) >= duplicates + 2,
        what="the redelivery to be consumed",
    )
    time.sleep(0.5)
    assert (
        len(receiver.delivered("once")) == 1 and len(receiver.delivered("once-other-browser")) == 1
    )
    with engine.connect() as conn:
        states = conn.execute(
            text("SELECT state FROM push_deliveries WHERE notification_id = :n"),
            {"n": n.notification_id},
        ).scalars()
        assert sorted(states) == ["sent", "sent"]


def _window(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def test_quiet_hours_hold_normal_pushes_until_the_window_ends(
    sender, receiver, add_subscription, notification, publish, deliveries, engine, wait_until
):
    sub = receiver.subscribe("night")
    add_subscription("u-night", sub)
    now = datetime.now(UTC)
    quiet = _window(now - timedelta(hours=1), now + timedelta(hours=2))
    held = notification("u-night", timezone="UTC", quiet_hours=quiet)
    urgent = notification(
        "u-night",
        type="MENTION",
        priority="high",
        timezone="UTC",
        quiet_hours=quiet,
        metadata={"server_id": "s", "channel_id": "c", "is_mentioned": True},
    )
    # TTL of 1 h (SYSTEM, see settings) runs out before the window ends: dropped.
    stale = notification("u-night", type="SYSTEM", timezone="UTC", quiet_hours=quiet)
    publish([held, urgent, stale])

    assert [
        (d.outcome, d.attempt) for d in deliveries(1, notification_id=urgent.notification_id)
    ] == [("sent", 1)]
    [deferred] = deliveries(1, notification_id=held.notification_id)
    assert deferred.outcome == "deferred" and "quiet hours until" in (deferred.reason or "")
    [dropped] = deliveries(1, notification_id=stale.notification_id)
    assert dropped.outcome == "suppressed" and "expires first" in (dropped.reason or "")
    with engine.connect() as conn:
        not_before = conn.execute(
            text("SELECT not_before FROM push_deliveries WHERE notification_id = :n"),
            {"n": held.notification_id},
        ).scalar_one()
    end = now.replace(second=0, microsecond=0) + timedelta(hours=2)
    assert not_before == end  # held to the end of the window, not merely delayed
    assert [r.message["data"]["notification_id"] for r in receiver.delivered("night")] == [
        str(urgent.notification_id)
    ]

    # The window ends (time travel: the row falls due): the held push goes out.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE push_deliveries SET not_before = now() WHERE notification_id = :n"),
            {"n": held.notification_id},
        )
    found = deliveries(2, notification_id=held.notification_id)
    assert [d.outcome for d in found] == ["deferred", "sent"]
    wait_until(lambda: len(receiver.delivered("night")) == 2, what="the held push")
    # Its TTL counts from the notification's creation, not from the end of the hold.
    assert int(receiver.delivered("night")[-1].headers["TTL"]) <= 86_400


def test_connect_time_guard_refuses_a_name_that_now_resolves_to_a_private_address(
    sender,
    receiver,
    add_subscription,
    subscription_state,
    notification,
    publish,
    deliveries,
    monkeypatch,
):
    # Saved while the name pointed at a public address; DNS now answers a loopback address
    # (127.0.0.2: not the dev host 127.0.0.1 the receiver is admitted as).
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "push.rebind.example":
            return real("127.0.0.2", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    sub = receiver.subscribe("rebind")
    sub.endpoint = f"https://push.rebind.example:{receiver.port}/push/rebind"
    sid = add_subscription("u-rebind", sub)
    refused = sample("notify_push_endpoint_refused_total", {"at": "connect"})
    n = notification("u-rebind")
    publish([n])
    [d] = deliveries(1, notification_id=n.notification_id)
    assert d.outcome == "failed" and "connect time" in (d.reason or "")
    assert sample("notify_push_endpoint_refused_total", {"at": "connect"}) > refused
    assert subscription_state(sid)["failure_count"] == 1  # counted, not retried
    assert receiver.received("rebind") == []


def test_a_subscription_made_with_a_retired_key_is_deactivated(
    sender, receiver, add_subscription, subscription_state, notification, publish, deliveries
):
    sub = receiver.subscribe("retired")
    retired = "B" + "A" * 86  # any key that is neither the current nor a previous one
    sid = add_subscription("u-retired", sub, application_server_key=retired)
    n = notification("u-retired")
    publish([n])
    [d] = deliveries(1, notification_id=n.notification_id)
    assert d.outcome == "deactivated" and "retired VAPID key" in (d.reason or "")
    assert not subscription_state(sid)["is_active"]
    assert receiver.received("retired") == []


def test_notifications_without_push_are_ignored(
    sender, receiver, add_subscription, notification, publish, deliveries
):
    sub = receiver.subscribe("feed-only")
    add_subscription("u-feed-only", sub)
    quiet = notification("u-feed-only", channels=["in_app"])
    loud = notification("u-feed-only")
    publish([quiet, loud])
    assert [d.outcome for d in deliveries(1, notification_id=loud.notification_id)] == ["sent"]
    assert deliveries(0, notification_id=quiet.notification_id, timeout=0.5) == []
    assert len(receiver.received("feed-only")) == 1
