"""Gap detection over source offsets, and reading a skipped range back from the broker."""

from __future__ import annotations

import pytest

from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_common.testing.kafka import read_topic
from notify_fanout.contiguity import ContiguityGuard, Gap, read_range
from notify_schemas import topics


def test_in_order_records_and_redeliveries_are_not_gaps():
    g = ContiguityGuard()
    assert [g.check("t", 0, o) for o in (5, 6, 7)] == [None, None, None]
    assert g.check("t", 0, 6) is None  # redelivered after a seek: processed again
    assert g.check("t", 1, 100) is None  # another partition starts anywhere


def test_a_skipped_offset_is_a_gap_once():
    g = ContiguityGuard()
    g.check("t", 0, 10)
    assert g.check("t", 0, 13) == Gap("t", 0, 11, 13)
    assert g.check("t", 0, 14) is None


def test_reset_forgets_positions():
    g = ContiguityGuard()
    g.check("t", 0, 10)
    g.reset()
    assert g.check("t", 0, 50) is None


@pytest.mark.integration
def test_read_range_returns_exactly_the_missing_records(broker, topic_prefix):
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=topic_prefix)
    topic = settings.topic(topics.MESSAGE_CREATED)
    producer = EventProducer(settings)
    for i in range(10):
        producer.produce(topic, key="same-key", value=f"{i}".encode(), headers=[])
    producer.flush()
    [partition] = {m.partition() for m in read_topic(broker.bootstrap, topic, 10)}
    records = read_range(settings, Gap(topic, partition, 3, 7))
    assert [r.offset() for r in records] == [3, 4, 5, 6]
    assert [r.value() for r in records] == [b"3", b"4", b"5", b"6"]


def test_the_first_record_after_an_assignment_must_start_at_the_committed_offset():
    g = ContiguityGuard(baseline=lambda _t, _p: 150)
    assert g.check("t", 5, 251) == Gap("t", 5, 150, 251)
    g.reset()
    assert g.check("t", 5, 150) is None
