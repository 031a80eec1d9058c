"""The producer confirms writes or says it could not, within the time it was given."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from notify_common.kafka.producer import EventProducer, PublishError
from notify_common.settings import CommonSettings
from notify_common.testing.infra import free_port
from notify_schemas import envelope, topics


def published(topic: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "notify_published_events_total", {"topic": topic, "result": result}
    )
    return value or 0.0


def dead_producer(**overrides: Any) -> EventProducer:
    # Nothing listens on this port: no write can ever be confirmed.
    settings = CommonSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}", topic_prefix="tdead.")
    producer = EventProducer(settings, **overrides)
    producer.start()
    return producer


def test_publish_without_a_broker_raises_within_its_timeout() -> None:
    producer = dead_producer()  # librdkafka alone would keep trying for minutes
    topic = producer.settings.topic(topics.NOTIFICATIONS)
    errors_before = published(topics.NOTIFICATIONS, "error")
    try:
        started = time.monotonic()
        with pytest.raises(PublishError, match="did not confirm"):
            asyncio.run(producer.publish(topic, key="u1", value=b"{}", headers=[], timeout=1.0))
        elapsed = time.monotonic() - started
    finally:
        producer.close(timeout=0)

    assert 0.9 <= elapsed < 2.5
    # SREs see it, under the contract's topic name rather than the per-environment one.
    assert published(topics.NOTIFICATIONS, "error") > errors_before


def test_publish_reports_a_failed_delivery_before_its_timeout() -> None:
    producer = dead_producer(**{"message.timeout.ms": 1000})
    try:
        started = time.monotonic()
        with pytest.raises(PublishError) as info:
            asyncio.run(
                producer.publish(
                    producer.settings.topic(topics.NOTIFICATIONS),
                    key="u1",
                    value=b"{}",
                    headers=[],
                    timeout=20,
                )
            )
        elapsed = time.monotonic() - started
    finally:
        producer.close(timeout=0)

    assert elapsed < 10
    assert "did not confirm" not in str(info.value)  # the broker's error, not our deadline


def test_flush_raises_when_writes_fail() -> None:
    producer = dead_producer(**{"message.timeout.ms": 1000})
    topic = producer.settings.topic(topics.NOTIFICATIONS)
    try:
        for i in range(3):
            producer.produce(topic, key=f"u{i}", value=b"{}", headers=[])
        started = time.monotonic()
        with pytest.raises(PublishError, match="3 events failed"):
            producer.flush(timeout=10)
        assert time.monotonic() - started < 8
    finally:
        producer.close(timeout=0)


def test_flush_raises_when_writes_are_not_confirmed_in_time() -> None:
    settings = CommonSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = EventProducer(settings)  # default delivery timeout: minutes
    try:
        producer.produce("notify.notifications.v1", key="u1", value=b"{}", headers=[])
        started = time.monotonic()
        with pytest.raises(PublishError, match="not confirmed"):
            producer.flush(timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        producer.close(timeout=0)


def test_a_failure_fails_every_flush_marked_before_it_not_only_the_first() -> None:
    """Two agents share the fanout's producer: a failed write must fail both their
    flushes, never be "used up" by one while the other commits its batch."""
    producer = dead_producer(**{"message.timeout.ms": 500})
    topic = producer.settings.topic(topics.NOTIFICATIONS)
    try:
        mark_a = producer.failure_mark()
        mark_b = producer.failure_mark()
        producer.produce(topic, key="u1", value=b"{}", headers=[])
        with pytest.raises(PublishError, match="1 events failed"):
            producer.flush(timeout=10, since=mark_a)
        with pytest.raises(PublishError, match="1 events failed"):
            producer.flush(timeout=10, since=mark_b)
        # A batch marked after the failure is not blamed for it.
        producer.flush(timeout=10, since=producer.failure_mark())
    finally:
        producer.close(timeout=0)


def test_a_fenced_producer_is_replaced_by_a_fresh_one() -> None:
    """PRODUCER_FENCED (seen on the embedded broker after an outage) fails every later
    write of that librdkafka producer: the next call uses a new one."""
    producer = dead_producer(**{"message.timeout.ms": 500})
    topic = producer.settings.topic(topics.NOTIFICATIONS)
    resets = REGISTRY.get_sample_value("notify_kafka_producer_resets_total") or 0.0
    try:
        old = producer.raw
        producer._on_error(KafkaError(KafkaError.PRODUCER_FENCED, "fenced"))
        assert producer.renewals_pending
        producer.produce(topic, key="u1", value=b"{}", headers=[])
        assert producer.raw is not old
        assert not producer.renewals_pending
        assert REGISTRY.get_sample_value("notify_kafka_producer_resets_total") == resets + 1
        # A retriable error (the broker is merely away) keeps the producer.
        current = producer.raw
        producer._on_error(KafkaError(KafkaError._TRANSPORT, "down"))
        producer.produce(topic, key="u2", value=b"{}", headers=[])
        assert producer.raw is current
    finally:
        producer.close(timeout=0)


@pytest.mark.integration
def test_publish_and_flush_write_to_the_real_broker(kit: Any) -> None:
    built = kit.build(user_id="u-pub")
    batch = [kit.build(user_id=f"u-{i}") for i in range(5)]
    producer = EventProducer(kit.settings)
    producer.start()
    oks_before = published(topics.NOTIFICATIONS, "ok")
    try:
        asyncio.run(
            producer.publish(
                kit.notifications,
                key=built.user_id,
                value=built.value,
                headers=built.headers,
                timeout=10,
            )
        )
        for e in batch:
            producer.produce(kit.notifications, key=e.user_id, value=e.value, headers=e.headers)
        producer.flush(15)
    finally:
        producer.close()

    stored = kit.read(kit.notifications, expect=6, timeout=15)
    by_value = {m.value(): m for m in stored}
    assert set(by_value) == {built.value, *(e.value for e in batch)}
    msg = by_value[built.value]
    assert msg.key() == b"u-pub"
    headers = envelope.decode_headers(msg.headers())
    assert headers["ce_id"] == dict(built.headers)["ce_id"].decode()
    assert headers["ce_type"] == "io.notify.NotificationCreated"
    assert published(topics.NOTIFICATIONS, "ok") == oks_before + 6
