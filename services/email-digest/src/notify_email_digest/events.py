"""What email-digest tells Kafka: DeliveryRecorded outcomes and dead letters.

They are not produced directly: each becomes a row of email_outbox in the same transaction
as the state change it reports, and the outbox pump publishes it (outbox.py). A crash can
therefore never record a mail as sent without its outcome following, nor the reverse.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notify_common.kafka.codec import dead_letter_headers
from notify_common.settings import CommonSettings
from notify_schemas import envelope, topics
from notify_schemas.models import DeliveryRecorded

SOURCE = "/notify/email-digest"
GROUP = "notify-email-digest"
DIRECTORY_GROUP = "notify-email-digest-directory"
_DELIVERY_TYPE = topics.topic(topics.DELIVERIES).ce_type or "io.notify.DeliveryRecorded"

# Outcomes (the contract's DeliveryRecorded.outcome values email uses).
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
DEFERRED = "deferred"

# Where a notification was read from, kept beside its headers for the dead letter.
SOURCE_PARTITION = "email_source_partition"
SOURCE_OFFSET = "email_source_offset"


class EmailFailed(Exception):
    """A mail that was refused (5xx) or whose retries ran out (the dead letter's class)."""


@dataclass(frozen=True)
class OutboxEvent:
    """One row for email_outbox: a record to publish, headers as text."""

    topic: str
    key: str
    value: bytes | None
    headers: dict[str, str]

    def row(self) -> dict[str, Any]:
        return {"topic": self.topic, "key": self.key, "value": self.value, "headers": self.headers}


def delivery(
    settings: CommonSettings,
    *,
    notification_id: uuid.UUID,
    user_id: str,
    outcome: str,
    reason: str | None,
    attempt: int,
    at: datetime,
    correlation_id: str | None = None,
) -> OutboxEvent:
    event = DeliveryRecorded(
        notification_id=notification_id,
        user_id=user_id,
        channel="email",
        outcome=outcome,
        reason=reason[:500] if reason else None,
        attempt=max(1, attempt),
        at=at,
    )
    value, headers = envelope.encode(
        event, ce_type=_DELIVERY_TYPE, source=SOURCE, correlation_id=correlation_id
    )
    return OutboxEvent(
        topic=settings.topic(topics.DELIVERIES),
        key=user_id,
        value=value,
        headers=envelope.decode_headers(headers),
    )


def dead_letter(
    settings: CommonSettings,
    *,
    user_id: str,
    event: bytes | None,
    event_headers: dict[str, str] | None,
    reason: str,
    attempts: int,
) -> OutboxEvent:
    """The notification as consumed, with the dlq_* headers the inbox admin lists and
    requeues by (a requeued notification is mailed again: see store.add_items)."""
    original = dict(event_headers or {})
    partition = int(original.pop(SOURCE_PARTITION, -1))
    offset = int(original.pop(SOURCE_OFFSET, -1))
    headers = dead_letter_headers(
        headers=list(original.items()),
        topic=settings.topic(topics.NOTIFICATIONS),
        partition=partition,
        offset=offset,
        group=settings.group(GROUP),
        exc=EmailFailed(reason),
        attempts=attempts,
    )
    return OutboxEvent(
        topic=settings.topic(topics.DLQ),
        key=user_id,
        value=event,
        headers=envelope.decode_headers(headers),
    )
