"""What push-sender writes to Kafka: DeliveryRecorded events and dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson

from notify_common import metrics
from notify_common.kafka.codec import dead_letter_headers
from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_schemas import envelope, topics

SOURCE = "/notify/push-sender"
GROUP = "notify-push-sender"
_DELIVERY_TYPE = topics.topic(topics.DELIVERIES).ce_type or "io.notify.DeliveryRecorded"

# Where the notification was read from, kept beside its headers for the dead letter.
SOURCE_PARTITION = "push_source_partition"
SOURCE_OFFSET = "push_source_offset"


class PushFailed(Exception):
    """A push that exhausted its retries (the dead letter's error class)."""


def delivery(
    *,
    notification_id: uuid.UUID,
    user_id: str,
    subscription_id: uuid.UUID | None,
    outcome: str,
    reason: str | None,
    attempt: int,
    at: datetime,
) -> bytes:
    """A DeliveryRecorded value (built directly: one per push attempt, on the hot path;
    a test checks it against the model)."""
    return orjson.dumps(
        {
            "notification_id": str(notification_id),
            "user_id": user_id,
            "channel": "push",
            "outcome": outcome,
            "reason": reason[:500] if reason else None,
            "attempt": max(1, attempt),
            "at": at.isoformat(),
            "subscription_id": str(subscription_id) if subscription_id else None,
        }
    )


class Publisher:
    """Queues events on a producer; the caller flushes before it treats them as written."""

    def __init__(self, settings: CommonSettings, producer: EventProducer) -> None:
        self.settings = settings
        self.producer = producer
        self._deliveries = settings.topic(topics.DELIVERIES)
        self._dlq = settings.topic(topics.DLQ)
        self._notifications = settings.topic(topics.NOTIFICATIONS)

    def delivery(self, *, user_id: str, value: bytes, correlation_id: str | None = None) -> None:
        headers = envelope.ce_headers(
            ce_type=_DELIVERY_TYPE,
            source=SOURCE,
            subject=user_id,
            correlation_id=correlation_id,
        )
        self.producer.produce(self._deliveries, key=user_id, value=value, headers=headers)

    def dead_letter(
        self,
        *,
        user_id: str,
        event: bytes,
        event_headers: dict[str, str],
        subscription_id: uuid.UUID,
        reason: str,
        attempts: int,
    ) -> None:
        original = dict(event_headers)
        partition = int(original.pop(SOURCE_PARTITION, -1))
        offset = int(original.pop(SOURCE_OFFSET, -1))
        headers = dead_letter_headers(
            headers=list(original.items()),
            topic=self._notifications,
            partition=partition,
            offset=offset,
            group=self.settings.group(GROUP),
            exc=PushFailed(reason),
            attempts=attempts,
        )
        headers.append(("push_subscription_id", str(subscription_id).encode()))
        self.producer.produce(self._dlq, key=user_id, value=event, headers=headers)
        metrics.DLQ_WRITES.labels(
            group=GROUP, topic=topics.NOTIFICATIONS, error_class=PushFailed.__name__
        ).inc()

    def flush(self) -> None:
        self.producer.flush()
