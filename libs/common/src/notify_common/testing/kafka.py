"""Reading topics in tests without joining a consumer group (no rebalance wait)."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


def read_topic(
    bootstrap: str, topic: str, count: int, *, timeout: float = 20.0, settle: float = 0.5
) -> list[Message]:
    """Every message of `topic` from the beginning: waits until `count` arrived (or timeout),
    then `settle` seconds more so that unexpected extra messages are seen too."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "notify-test-reader",  # never subscribes, never commits
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in consumer.consume(1000, 0.1) if m.error() is None]
        end = time.monotonic() + settle
        while time.monotonic() < end:
            out += [m for m in consumer.consume(1000, 0.1) if m.error() is None]
        return out
    finally:
        consumer.close()
