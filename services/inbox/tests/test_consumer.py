"""The feed consumer against the real broker and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY
from sqlalchemy import text

from notify_common.db.engine import make_engine
from notify_common.kafka.runner import Received
from notify_common.testing.infra import free_port
from notify_inbox.consumer import UNAVAILABLE, PersistNotifications, persist
from notify_inbox.settings import InboxSettings
from notify_schemas import envelope, topics

pytestmark = pytest.mark.integration


def duplicates() -> float:
    return REGISTRY.get_sample_value("notify_inbox_duplicates_total") or 0.0


def stored(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT notification_id, user_id FROM notifications ORDER BY seq"))
        return [(str(r.notification_id), r.user_id) for r in rows]


def test_every_notification_is_stored_once_when_delivered_twice(
    running_consumer, publish, notification, engine, wait_until
):
    events = [notification(f"u-{i % 7}", title=f"n{i}") for i in range(60)]
    duplicates_before = duplicates()

    publish(events)
    publish(events)  # a producer retry or an upstream replay: same ids again

    expected = sorted((str(e.notification_id), e.user_id) for e in events)
    wait_until(lambda: len(stored(engine)) >= len(events), what="60 notifications stored")
    # The second copies follow the first ones on every partition: once the counter saw
    # them all, nothing else is on its way.
    wait_until(
        lambda: duplicates() - duplicates_before >= len(events),
        what="every redelivery seen",
    )
    assert sorted(stored(engine)) == expected
    # Within a user (one partition) the feed keeps the order of publication.
    by_user = [nid for nid, user in stored(engine) if user == "u-3"]
    assert by_user == [str(e.notification_id) for e in events if e.user_id == "u-3"]


@pytest.mark.reliability
def test_poison_messages_are_dead_lettered_and_consumption_goes_on(
    running_consumer, settings, publish, notification, engine, read_topic, wait_until
):
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topic(topics.NOTIFICATIONS)
    valid = notification("u-carol")
    _, headers = envelope.encode(valid, ce_type="io.notify.NotificationCreated", source="/tests")
    broken = valid.model_dump(mode="json")
    broken["priority"] = "urgent"  # not in the contract
    raw.produce(topic, key="u-carol", value=b"{not json", headers=headers)
    raw.produce(topic, key="u-carol", value=json.dumps(broken).encode(), headers=headers)
    assert raw.flush(10) == 0
    # Valid per the contract, impossible in PostgreSQL (text cannot hold NUL): not retried
    # forever, dead-lettered while the rest of its batch is stored.
    nul = notification("u-carol", title="nul \x00 byte")
    after = notification("u-carol", title="after the poison")
    publish([nul, after])
    nul_value, _ = envelope.encode(nul, ce_type="io.notify.NotificationCreated", source="/tests")

    wait_until(lambda: stored(engine), what="the valid notification stored")
    assert stored(engine) == [(str(after.notification_id), "u-carol")]

    dead = {m.value(): m for m in read_topic(topics.DLQ, 3)}
    expected = {
        b"{not json": ("InvalidEvent", "Invalid JSON"),
        json.dumps(broken).encode(): ("InvalidEvent", "schema violation: priority"),
        nul_value: ("PermanentError", "PostgreSQL refused the data"),
    }
    assert set(dead) == set(expected)
    for value, (error_class, reason) in expected.items():
        hdrs = envelope.decode_headers(dead[value].headers())
        assert hdrs["dlq_error_class"] == error_class
        assert reason in hdrs["dlq_reason"]
        assert hdrs["dlq_original_topic"] == topic
        assert hdrs["dlq_consumer_group"] == settings.group("notify-inbox")
        assert dead[value].key() == b"u-carol"


def test_persist_inside_a_callers_transaction_leaves_the_commit_to_it(engine, notification):
    events = [notification("u-carol") for _ in range(3)]
    with engine.connect() as conn:
        assert persist(conn, events) == 3
        conn.rollback()
    assert stored(engine) == []
    with engine.begin() as conn:
        assert persist(conn, events[:2]) == 2
        assert persist(conn, events) == 1
    assert len(stored(engine)) == 3
    assert persist(engine, []) == 0


def test_an_unreachable_database_is_waited_for_not_blamed_on_the_events(notification):
    # The runner retries exceptions listed as unavailable for as long as it takes and
    # dead-letters nothing; anything else would end up dead-lettering valid notifications.
    settings = InboxSettings(
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
        jwt_secret="test-secret-that-is-long-enough-for-hs256",
    )
    engine = make_engine(settings)
    event = notification("u-carol")
    item = Received(
        event=event, key="u-carol", headers={}, topic="t", partition=0, offset=0, message=None
    )
    try:
        with pytest.raises(UNAVAILABLE):
            PersistNotifications(engine)([item])
    finally:
        engine.dispose()
