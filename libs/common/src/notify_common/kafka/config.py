"""librdkafka configuration derived from settings, in one place."""

from __future__ import annotations

from typing import Any

from notify_common.settings import CommonSettings


def client_config(settings: CommonSettings, **overrides: Any) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap, **overrides}


def producer_config(settings: CommonSettings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer: a confirmed write is on every in-sync replica."""
    return client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            # The Java client's partitioner: upstream Java producers, Faust (aiokafka) and we
            # must map a key to the same partition, or co-partitioned joins break.
            "partitioner": "murmur2_random",
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            **overrides,
        },
    )


def consumer_config(settings: CommonSettings, group: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits only: offsets move after the handler succeeded or dead-lettered."""
    return client_config(
        settings,
        **{
            "group.id": settings.group(group),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
            "fetch.wait.max.ms": settings.kafka_fetch_wait_ms,
            "partition.assignment.strategy": "cooperative-sticky",
            **overrides,
        },
    )
