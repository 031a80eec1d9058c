"""The admin API (/v1/admin) against the real broker and PostgreSQL: dead letters recorded
from notify.dlq.v1 and requeued to their topic, message status, pipeline stats, roles."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy import Engine, func, insert, select

from notify_common.auth import issue_user_token
from notify_common.db.models import DeliveryOutcomeRow, DlqEntryRow, FanoutResultRow
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import Backoff, ConsumerRunner
from notify_inbox.admin_consumers import build_dlq_runner, build_status_runner
from notify_inbox.app import build_app
from notify_inbox.consumer import persist
from notify_inbox.settings import InboxSettings
from notify_schemas import envelope, topics
from notify_schemas.models import DeliveryRecorded, FanoutCompleted

pytestmark = pytest.mark.integration

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"


@contextmanager
def running(runner: ConsumerRunner) -> Iterator[ConsumerRunner]:
    runner.backoff = Backoff(base=0.05, cap=0.5)
    thread = threading.Thread(target=runner.run, name="test-admin-consumer")
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(15)
        assert not thread.is_alive(), "the consumer did not stop"


def admin_headers(settings: InboxSettings, user_id: str = "u-ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_user_token(settings, user_id, admin=True)}"}


def user_headers(settings: InboxSettings, user_id: str = "u-carol") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_user_token(settings, user_id)}"}


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model)) or 0


def recorded(topic: str) -> float:
    return REGISTRY.get_sample_value("notify_admin_dlq_recorded_total", {"topic": topic}) or 0.0


def add_entries(engine: Engine, *rows: dict[str, Any]) -> list[int]:
    """Dead letters as the DLQ consumer stores them (for the API tests)."""
    now = datetime.now(UTC)
    full = [
        {
            "original_partition": 0,
            "original_offset": i,
            "consumer_group": "notify-inbox",
            "key": b"u-carol",
            "value": b'{"user_id": "u-carol"}',
            "headers": {"ce_id": f"e-{i}", "ce_type": "io.notify.User"},
            "error_class": "InvalidEvent",
            "reason": "schema violation",
            "attempts": 1,
            "dlq_partition": 0,
            "dlq_offset": i,
            "dead_lettered_at": now,
        }
        | row
        for i, row in enumerate(rows)
    ]
    with engine.begin() as conn:
        return list(
            conn.execute(insert(DlqEntryRow).returning(DlqEntryRow.id), full).scalars().all()
        )


@pytest.fixture
def broker_app(settings: InboxSettings, engine: Engine) -> Iterator[TestClient]:
    """The API with a broker (requeue publishes) but none of the consumers running."""
    api_only = settings.model_copy(
        update={"inbox_consumer_enabled": False, "inbox_relay_enabled": False}
    )
    with TestClient(build_app(api_only, engine=engine)) as client:
        yield client


# --- dead letters ------------------------------------------------------------------------


def test_dead_letters_are_recorded_once_however_often_they_arrive(
    running_consumer, settings, engine, read_topic, wait_until
):
    """A poison notification, dead-lettered by the feed consumer, is listed with where it
    came from and why; a redelivered DLQ record adds nothing."""
    notifications_topic = settings.topic(topics.NOTIFICATIONS)
    before = recorded(topics.NOTIFICATIONS)
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    headers = envelope.ce_headers(ce_type="io.notify.NotificationCreated", source="/tests")
    raw.produce(notifications_topic, key="u-carol", value=b"{not json", headers=headers)
    assert raw.flush(10) == 0

    with running(build_dlq_runner(settings, engine)):
        [dead] = read_topic(topics.DLQ, 1)
        wait_until(lambda: count(engine, DlqEntryRow) == 1, what="the dead letter recorded")
        # The same DLQ record again (a redelivery), then a different one behind it on the
        # same partition: once that one is in, the copy was seen.
        raw.produce(dead.topic(), key=dead.key(), value=dead.value(), headers=dead.headers())
        other = [(k, v) for k, v in dead.headers() if k != "dlq_original_offset"]
        other.append(("dlq_original_offset", b"999999"))
        raw.produce(dead.topic(), key=dead.key(), value=b"other", headers=other)
        # And a record some producer put on the DLQ without saying where it came from.
        # (Its header holds a NUL, which PostgreSQL text cannot: stored with a stand-in.)
        raw.produce(dead.topic(), key=b"stray", value=b"stray", headers=[("note", b"a\x00b")])
        assert raw.flush(10) == 0

        def others_in() -> bool:
            with engine.connect() as conn:
                values = set(conn.execute(select(DlqEntryRow.value)).scalars())
            return {b"other", b"stray"} <= values

        wait_until(others_in, what="the other dead letters")

    assert count(engine, DlqEntryRow) == 3
    assert recorded(topics.NOTIFICATIONS) - before == 2
    with engine.connect() as conn:
        stray = conn.execute(select(DlqEntryRow).where(DlqEntryRow.key == b"stray")).one()
    assert stray.original_topic == settings.topic(topics.DLQ)
    assert stray.error_class == "Unknown"
    assert stray.headers == {"note": "a\ufffdb"}
    with TestClient(
        build_app(settings.model_copy(update={"inbox_consumer_enabled": False}), engine=engine)
    ) as client:
        page = client.get(
            "/v1/admin/dlq", params={"topic": topics.NOTIFICATIONS}, headers=admin_headers(settings)
        ).json()
    first = next(i for i in page["items"] if i["value_preview"] == "{not json")
    assert first["topic"] == topics.NOTIFICATIONS
    assert first["error_class"] == "InvalidEvent"
    assert "Invalid JSON" in first["reason"]
    assert first["consumer_group"] == settings.group("notify-inbox")
    assert first["key"] == "u-carol"
    assert first["offset"] == int(envelope.decode_headers(dead.headers())["dlq_original_offset"])
    assert first["headers"]["ce_type"] == "io.notify.NotificationCreated"
    assert not any(k.startswith("dlq_") for k in first["headers"])
    assert first["requeued_at"] is None and first["requeue_count"] == 0


def test_listing_filters_pages_and_hides_secrets(api, db_settings, engine):
    now = datetime.now(UTC)
    users, members = topics.USERS, topics.MEMBERSHIPS
    add_entries(
        engine,
        {"original_topic": users, "dead_lettered_at": now - timedelta(hours=3)},
        {"original_topic": users, "dead_lettered_at": now - timedelta(hours=2)},
        {"original_topic": users, "error_class": "PermanentError"},
        {"original_topic": members, "dead_lettered_at": now - timedelta(hours=1)},
        {"original_topic": members},
        {
            "original_topic": members,
            "error_class": "KeyError",
            "value": b'{"user_id": "u-1", "auth": {"token": "s3cret"}, "password": "hunter2"}',
            "headers": {"ce_id": "x", "authorization": "Bearer abc.def"},
        },
        {"original_topic": members},
    )
    admin = admin_headers(db_settings)

    def ids(**params: Any) -> list[int]:
        resp = api.get("/v1/admin/dlq", params=params, headers=admin)
        assert resp.status_code == 200, resp.text
        return [i["id"] for i in resp.json()["items"]]

    assert len(ids()) == 7
    assert len(ids(topic=users)) == 3
    assert len(ids(topic=members, error_class="InvalidEvent")) == 3
    assert len(ids(error_class="PermanentError")) == 1
    assert len(ids(since=(now - timedelta(minutes=150)).isoformat())) == 6
    assert len(ids(until=(now - timedelta(minutes=30)).isoformat())) == 3
    assert len(ids(since=(now - timedelta(minutes=150)).isoformat(), topic=users)) == 2

    # Pages of 3, newest first, each entry exactly once.
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = api.get("/v1/admin/dlq", params=params, headers=admin).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 7
    assert api.get("/v1/admin/dlq", params={"cursor": "nope"}, headers=admin).status_code == 400

    [secretive] = api.get(
        "/v1/admin/dlq", params={"error_class": "KeyError"}, headers=admin
    ).json()["items"]
    shown = str(secretive)
    assert "s3cret" not in shown and "hunter2" not in shown and "abc.def" not in shown
    assert secretive["headers"]["authorization"] == "[redacted]"
    assert '"user_id": "u-1"' in secretive["value_preview"]


def test_stats_count_by_topic_and_error_class(api, db_settings, engine):
    ids = add_entries(
        engine,
        {"original_topic": topics.USERS},
        {"original_topic": topics.USERS},
        {"original_topic": topics.USERS, "error_class": "PermanentError"},
        {"original_topic": topics.MEMBERSHIPS},
    )
    with engine.begin() as conn:
        conn.execute(
            DlqEntryRow.__table__.update()
            .where(DlqEntryRow.id == ids[0])
            .values(requeued_at=datetime.now(UTC), requeue_count=1)
        )
    stats = api.get("/v1/admin/dlq/stats", headers=admin_headers(db_settings)).json()
    assert stats["total"] == 4
    assert stats["requeued"] == 1 and stats["not_requeued"] == 3
    assert stats["by_topic"] == {topics.USERS: 3, topics.MEMBERSHIPS: 1}
    assert stats["by_error_class"] == {"InvalidEvent": 3, "PermanentError": 1}
    users_invalid = next(
        g
        for g in stats["groups"]
        if g["topic"] == topics.USERS and g["error_class"] == "InvalidEvent"
    )
    assert users_invalid == {
        "topic": topics.USERS,
        "error_class": "InvalidEvent",
        "total": 2,
        "requeued": 1,
        "not_requeued": 1,
    }


def test_requeue_republishes_to_the_original_topic_exactly_once(
    broker_app, settings, engine, read_topic
):
    users = settings.topic(topics.USERS)
    value = b'{"user_id": "u-dan", "display_name": "Dan"}'
    [entry] = add_entries(
        engine,
        {
            "original_topic": users,
            "key": b"u-dan",
            "value": value,
            "headers": {"ce_id": "evt-1", "ce_type": "io.notify.User", "ce_source": "/up"},
        },
    )
    admin = admin_headers(settings)

    first = broker_app.post(f"/v1/admin/dlq/{entry}/requeue", headers=admin)
    second = broker_app.post(f"/v1/admin/dlq/{entry}/requeue", headers=admin)

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "requeued"
    assert first.json()["topic"] == topics.USERS
    assert second.status_code == 200
    assert second.json()["status"] == "already_requeued"
    assert second.json()["requeued_at"] == first.json()["requeued_at"]
    # Exactly one copy on the topic, even after waiting for stragglers.
    [msg] = read_topic(topics.USERS, 1, settle=1.5)
    assert msg.key() == b"u-dan" and msg.value() == value
    hdrs = envelope.decode_headers(msg.headers())
    assert hdrs["ce_id"] == "evt-1" and hdrs["ce_type"] == "io.notify.User"
    assert hdrs["notify_requeued_from"] == f"dlq:{entry}"
    with engine.connect() as conn:
        row = conn.execute(select(DlqEntryRow).where(DlqEntryRow.id == entry)).one()
    assert row.requeue_count == 1 and row.requeued_at is not None
    listed = broker_app.get("/v1/admin/dlq", params={"requeued": "true"}, headers=admin).json()
    assert [i["id"] for i in listed["items"]] == [entry]

    assert broker_app.post("/v1/admin/dlq/987654/requeue", headers=admin).status_code == 404


def test_bulk_requeue_takes_the_matching_entries_once(broker_app, settings, engine, read_topic):
    users = settings.topic(topics.USERS)
    members = settings.topic(topics.MEMBERSHIPS)
    add_entries(
        engine,
        {"original_topic": users, "value": b"1"},
        {"original_topic": users, "value": b"2"},
        {"original_topic": users, "value": b"3"},
        {"original_topic": users, "value": b"4", "error_class": "PermanentError"},
        {"original_topic": members, "value": b"5"},
    )
    admin = admin_headers(settings)
    body = {"topic": topics.USERS, "error_class": "InvalidEvent"}

    first = broker_app.post("/v1/admin/dlq/requeue", json=body, headers=admin)
    again = broker_app.post("/v1/admin/dlq/requeue", json=body, headers=admin)

    assert first.status_code == 200, first.text
    assert first.json() == {"requeued": 3, "remaining": 0}
    assert again.json() == {"requeued": 0, "remaining": 0}
    on_topic = read_topic(topics.USERS, 3, settle=1.5)
    assert sorted(m.value() for m in on_topic) == [b"1", b"2", b"3"]
    assert read_topic(topics.MEMBERSHIPS, 0, timeout=0.5, settle=0.5) == []
    stats = broker_app.get("/v1/admin/dlq/stats", headers=admin).json()
    assert stats["requeued"] == 3 and stats["not_requeued"] == 2


ADMIN_ENDPOINTS = [
    ("get", "/v1/admin/dlq"),
    ("get", "/v1/admin/dlq/stats"),
    ("post", "/v1/admin/dlq/1/requeue"),
    ("post", "/v1/admin/dlq/requeue"),
    ("get", "/v1/admin/messages/m-1"),
    ("get", "/v1/admin/stats"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_admin_endpoints_need_the_admin_role(api, db_settings, method, path):
    call: Callable[..., Any] = getattr(api, method)
    kwargs: dict[str, Any] = {"json": {}} if method == "post" else {}
    assert call(path, **kwargs).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert call(path, headers=bad, **kwargs).status_code == 401
    assert call(path, headers=user_headers(db_settings), **kwargs).status_code == 403


def test_unknown_dead_letter_and_message_are_404(api, db_settings):
    admin = admin_headers(db_settings)
    assert api.post("/v1/admin/dlq/42/requeue", headers=admin).status_code == 404
    assert api.get("/v1/admin/messages/m-unknown", headers=admin).status_code == 404


def test_a_dead_letter_without_an_origin_is_listed_but_not_requeued(api, db_settings, engine):
    """A record produced to the DLQ without dlq_* headers is stored as its own origin;
    sending it "back" would only put it on the DLQ again."""
    [entry] = add_entries(engine, {"original_topic": topics.DLQ, "error_class": "Unknown"})
    admin = admin_headers(db_settings)
    resp = api.post(f"/v1/admin/dlq/{entry}/requeue", headers=admin)
    assert resp.status_code == 409
    assert "no original topic" in resp.json()["detail"]
    bulk = api.post("/v1/admin/dlq/requeue", json={}, headers=admin)
    assert bulk.json() == {"requeued": 0, "remaining": 0}
    assert [i["id"] for i in api.get("/v1/admin/dlq", headers=admin).json()["items"]] == [entry]


# --- message status and stats -------------------------------------------------------------


def send(producer: EventProducer, settings: InboxSettings, topic: str, key: str, event: BaseModel):
    ce_type = topics.topic(topic).ce_type
    assert ce_type
    value, headers = envelope.encode(event, ce_type=ce_type, source="/tests")
    producer.produce(settings.topic(topic), key=key, value=value, headers=headers)


def test_message_status_and_stats_add_up(settings, engine, notification, wait_until):
    now = datetime.now(UTC)
    meta = {"message_id": "m-77", "server_id": "s-1", "channel_id": "c-1", "is_mentioned": False}
    feed = {
        "u-1": ["in_app", "push", "email"],
        "u-2": ["in_app", "push"],
        "u-3": ["in_app", "push"],
        "u-4": ["in_app", "email"],
    }
    events = {u: notification(u, metadata=meta, channels=ch) for u, ch in feed.items()}
    other = notification("u-1", metadata={**meta, "message_id": "m-other"})
    assert persist(engine, [*events.values(), other]) == 5

    def delivery(user: str, channel: str, outcome: str, seconds: int) -> DeliveryRecorded:
        return DeliveryRecorded(
            notification_id=events[user].notification_id,
            user_id=user,
            channel=channel,  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            attempt=1,
            at=now + timedelta(seconds=seconds),
            subscription_id=uuid.uuid4() if channel == "push" else None,
        )

    deliveries = [
        delivery("u-1", "push", "sent", 1),
        delivery("u-1", "email", "deferred", 1),
        delivery("u-2", "push", "failed", 1),
        delivery("u-2", "push", "sent", 2),  # a retry that worked
        delivery("u-2", "push", "failed", 3),  # another browser failed: still delivered
        delivery("u-4", "email", "failed", 1),
        # u-3's push has no outcome yet: pending
    ]
    result = FanoutCompleted(
        source_id="m-77",
        kind="message",
        recipients=5,  # one notification is not in the feed yet
        suppressed={"sender": 1, "not_entitled": 2, "channel_muted": 1},
        at=now,
    )
    producer = EventProducer(settings)
    with running(build_status_runner(settings, engine)):
        send(producer, settings, topics.FANOUT_RESULTS, "m-77", result)
        for d in deliveries:
            send(producer, settings, topics.DELIVERIES, d.user_id, d)
        send(producer, settings, topics.FANOUT_RESULTS, "m-77", result)  # a replayed batch
        # Deliveries are keyed by user: once this one, behind u-2's three push outcomes on
        # their partition, is stored, all of them were read (the others are one per key).
        sentinel = delivery("u-2", "email", "suppressed", 4)
        send(producer, settings, topics.DELIVERIES, "u-2", sentinel)
        producer.flush()
        wait_until(
            lambda: count(engine, DeliveryOutcomeRow) == 5 and count(engine, FanoutResultRow),
            what="outcomes and the fanout result recorded",
        )
    producer.close()
    with engine.begin() as conn:  # the sentinel was only there to sequence the test
        conn.execute(
            DeliveryOutcomeRow.__table__.delete()
            .where(DeliveryOutcomeRow.channel == "email")
            .where(DeliveryOutcomeRow.user_id == "u-2")
        )

    api_settings = settings.model_copy(
        update={"inbox_consumer_enabled": False, "inbox_relay_enabled": False}
    )
    with TestClient(build_app(api_settings, engine=engine)) as client:
        admin = admin_headers(settings)
        status = client.get("/v1/admin/messages/m-77", headers=admin)
        stats = client.get("/v1/admin/stats", headers=admin).json()

    assert status.status_code == 200, status.text
    body = status.json()
    assert body["fanout"] == {
        "kind": "message",
        "recipients": 5,
        "suppressed": {"sender": 1, "not_entitled": 2, "channel_muted": 1},
        "suppressed_total": 4,
        "at": body["fanout"]["at"],
    }
    assert body["notifications"] == 4
    zero = {"failed": 0, "deferred": 0, "suppressed": 0}
    assert body["channels"]["in_app"] == {"listed": 4, "sent": 4, "pending": 1, **zero}
    assert body["channels"]["push"] == {"listed": 3, "sent": 2, "pending": 1, **zero}
    assert body["channels"]["email"] == {
        "listed": 2,
        "sent": 0,
        "failed": 1,
        "deferred": 1,
        "suppressed": 0,
        "pending": 0,
    }

    last = stats["windows"]["15m"]
    assert last["seconds"] == 900
    assert last["notifications_persisted"]["total"] == 5
    assert last["notifications_persisted"]["per_second"] == pytest.approx(5 / 900, abs=1e-4)
    assert last["fanout_source_events"]["total"] == 1
    assert last["fanout_recipients"]["total"] == 5
    assert last["dlq_entries"]["total"] == 0
    assert last["deliveries"]["push"]["sent"]["total"] == 2
    assert last["deliveries"]["email"] == {
        "deferred": {"total": 1, "per_second": round(1 / 900, 4)},
        "failed": {"total": 1, "per_second": round(1 / 900, 4)},
    }
    assert stats["windows"]["24h"]["notifications_persisted"]["total"] == 5
