"""Gap repair for the fanout's source streams.

A delete-policy topic written without transactions has contiguous offsets, so every record
of a partition must reach the agent in order. In the SIGKILL-and-restart test on the
embedded broker, the restarted Faust worker was seen to skip a record now and then (one
offset never reached the agent, the stream carried on after it, and the committed offset
moved past it): a lost message for every recipient. The cause lies below our code (Faust's
consumer or its client against this broker), so the fanout checks what it is given.

`ContiguityGuard` remembers, per partition, the next offset it expects. A record further on
means the records in between were skipped: the agent reads exactly that range straight from
the broker (`read_range`) and fans it out before acknowledging its batch, so the range is
durable before any offset past it can be committed. Legitimate gaps (transaction markers,
compaction) read back as no records, and nothing happens.

The fanout also commits the source offsets itself, after each batch's outputs are
confirmed (Faust's own ack bookkeeping is switched off for these topics): in the same test
the group's committed offset was once found past a block of records the killed worker had
never fanned out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from notify_common.kafka.config import client_config
from notify_common.settings import CommonSettings


@dataclass(frozen=True)
class Gap:
    topic: str
    partition: int
    start: int  # first missing offset
    end: int  # the offset that arrived (exclusive end of the gap)


class ContiguityGuard:
    """`baseline(topic, partition)` gives the group's committed offset, where the first
    record after an assignment must start; None when unknown."""

    def __init__(self, baseline: Callable[[str, int], int | None] = lambda _t, _p: None) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._baseline = baseline

    def reset(self) -> None:
        """Forget positions (after a rebalance: the next record of a partition may be from
        anywhere the group committed)."""
        self._next.clear()

    def check(self, topic: str, partition: int, offset: int) -> Gap | None:
        key = (topic, partition)
        expected = self._next.get(key)
        if expected is None:
            expected = self._baseline(topic, partition)
        self._next[key] = max(offset + 1, expected or 0)
        if expected is None or offset <= expected:
            # First record seen, the next one, or a redelivery of an older one (processed
            # again; notification ids make that harmless).
            return None
        return Gap(topic, partition, expected, offset)


def read_range(settings: CommonSettings, gap: Gap, timeout: float = 10.0) -> list[Message]:
    """The records of [gap.start, gap.end) of one partition, read without a consumer group."""
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": settings.group("notify-fanout-gap-repair"),  # never subscribes
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 50,
            },
        )
    )
    try:
        consumer.assign([TopicPartition(gap.topic, gap.partition, gap.start)])
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        position = gap.start
        while position < gap.end and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                offset = msg.offset() or 0
                position = offset + 1
                if offset >= gap.end:
                    return found
                found.append(msg)
        if position < gap.end:
            raise TimeoutError(f"could not read {gap} within {timeout}s")
        return found
    finally:
        consumer.close()
