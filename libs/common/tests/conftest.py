"""Helpers for the Kafka integration tests: settings for this test's namespace, notification
events built from the contract's example, and a reader that sees a topic as it really is."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_common.testing import kafka as kafka_reader
from notify_common.testing.infra import Broker
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationCreated
from notify_schemas.topics import contract_dir

EXAMPLE = contract_dir() / "examples" / topics.NOTIFICATIONS / "1" / "new_message.json"


@pytest.fixture
def kafka_settings(broker: Broker, topic_prefix: str) -> CommonSettings:
    # Short group timeouts: the embedded broker only joins groups quickly with these.
    return CommonSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=topic_prefix,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=500,
    )


@dataclass(frozen=True)
class Built:
    notification_id: str
    user_id: str
    value: bytes
    headers: envelope.Headers


def build_notification(user_id: str | None = None, **overrides: Any) -> Built:
    """A valid NotificationCreated (from the contract's example) with a fresh id."""
    data = json.loads(EXAMPLE.read_text())
    data["notification_id"] = str(uuid.uuid4())
    data["user_id"] = user_id or f"u-{uuid.uuid4().hex[:8]}"
    data.update(overrides)
    event = NotificationCreated.model_validate(data)
    ce_type = topics.topic(topics.NOTIFICATIONS).ce_type
    assert ce_type is not None
    value, headers = envelope.encode(event, ce_type=ce_type, source="test")
    return Built(data["notification_id"], data["user_id"], value, headers)


def read_topic(
    settings: CommonSettings,
    topic: str,
    *,
    expect: int,
    timeout: float = 15.0,
    settle: float = 0.0,
) -> list[Message]:
    """Every record of `topic` from the beginning, by partition assignment (no group join):
    once `expect` records arrived, `settle` seconds more to catch extras; or the deadline."""
    return kafka_reader.read_topic(
        settings.kafka_bootstrap, topic, expect, timeout=timeout, settle=settle
    )


def committed(settings: CommonSettings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (absent when nothing was committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.group(group),
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in offsets if tp.offset >= 0}
    finally:
        consumer.close()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class KafkaKit:
    """What the Kafka tests need, bound to this test's namespace (fixtures are how test
    modules share code here: pytest imports them with --import-mode=importlib)."""

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self.notifications = settings.topic(topics.NOTIFICATIONS)
        self.dlq = settings.topic(topics.DLQ)

    build = staticmethod(build_notification)
    wait_until = staticmethod(wait_until)

    def produce(self, records: list[tuple[str | None, bytes | None, envelope.Headers]]) -> None:
        """Write (key, value, headers) records to the notifications topic and confirm them."""
        producer = EventProducer(self.settings)
        try:
            for key, value, headers in records:
                producer.produce(self.notifications, key=key, value=value, headers=headers)
            producer.flush(15)
        finally:
            producer.close(0)

    def produce_events(self, events: list[Built]) -> None:
        self.produce([(e.user_id, e.value, e.headers) for e in events])

    def read(self, topic: str, *, expect: int, timeout: float = 15.0, settle: float = 0.0):
        return read_topic(self.settings, topic, expect=expect, timeout=timeout, settle=settle)

    def committed(self, group: str) -> dict[int, int]:
        return committed(self.settings, group, self.notifications)


@pytest.fixture
def kit(kafka_settings: CommonSettings) -> KafkaKit:
    return KafkaKit(kafka_settings)
