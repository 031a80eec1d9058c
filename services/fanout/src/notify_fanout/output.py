"""The fanout's output path: one confluent-kafka producer, fed straight from the rules.

Faust's own `send` costs ~250 µs per record here; librdkafka's produce costs ~2 µs. Every
notification gets CloudEvents binary-mode headers; only ce_id differs per recipient, so the
rest is built once per source event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import orjson

from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_schemas import envelope
from notify_schemas.models import FanoutCompleted
from notify_schemas.topics import (
    FANOUT_RESULTS,
    NOTIFICATIONS,
    NOTIFICATIONS_PRIORITY,
    SUPPRESSIONS,
)

SOURCE = b"/notify/fanout"
CE_TYPE = b"io.notify.NotificationCreated"
POLL_EVERY = 2000
SUMMARY_CE_TYPE = "io.notify.FanoutCompleted"
SUPPRESSION_CE_TYPE = b"io.notify.NotificationSuppressed"


class NotificationOutput:
    def __init__(self, settings: CommonSettings, producer: EventProducer | None = None) -> None:
        self.topic = settings.topic(NOTIFICATIONS)
        self.priority_topic = settings.topic(NOTIFICATIONS_PRIORITY)
        self.results_topic = settings.topic(FANOUT_RESULTS)
        self.suppressions_topic = settings.topic(SUPPRESSIONS)
        self.producer = producer or EventProducer(settings, **{"linger.ms": 5})
        self._produce = self.producer.raw.produce
        self._since_poll = 0
        self._shared: envelope.Headers = []

    def begin(self, correlation_id: str | None) -> None:
        """Start the outputs of one source event (sets the shared headers)."""
        # The producer may have been replaced after a fatal error (EventProducer).
        self._produce = self.producer.raw.produce
        shared: envelope.Headers = [
            ("ce_specversion", envelope.SPECVERSION),
            ("ce_source", SOURCE),
            ("ce_type", CE_TYPE),
            ("ce_time", datetime.now(UTC).isoformat().encode()),
            ("content-type", envelope.CONTENT_TYPE),
        ]
        if correlation_id:
            shared.append((envelope.CORRELATION_HEADER, correlation_id.encode()))
        self._shared = shared

    def emit(self, user_id: str, notification_id: str, value: bytes) -> None:
        """Queue one notification on the bulk lane (notify.notifications.v1)."""
        self._emit(self.topic, user_id, notification_id, value)

    def emit_priority(self, user_id: str, notification_id: str, value: bytes) -> None:
        """Queue one critical or high-priority notification on the priority lane
        (notify.notifications-priority.v1; docs/decisions/0010-priority-lanes.md)."""
        self._emit(self.priority_topic, user_id, notification_id, value)

    def _emit(self, topic: str, user_id: str, notification_id: str, value: bytes) -> None:
        headers: envelope.Headers = [("ce_id", notification_id.encode()), *self._shared]
        try:
            self._produce(topic, value, user_id, headers=headers)
        except BufferError:
            self.producer.produce(topic, key=user_id, value=value, headers=headers)
        self._since_poll += 1
        if self._since_poll >= POLL_EVERY:
            self._since_poll = 0
            self.producer.poll(0)

    def suppressions(
        self,
        *,
        source_id: str,
        kind: str,
        server_id: str | None,
        channel_id: str | None,
        users: Sequence[tuple[str, str]],
        correlation_id: str | None,
    ) -> int:
        """Queue one NotificationSuppressed record per (user_id, reason) of one source event
        (key user_id), on the same producer as its notifications, so the batch's `flush`
        confirms them before the source offset is committed. The ce_id is
        "{source_id}/{user_id}" (ids never contain "/"): a replay re-emits the same ids.
        Returns how many were queued."""
        if not users:
            return 0
        at = datetime.now(UTC)
        shared: envelope.Headers = [
            ("ce_specversion", envelope.SPECVERSION),
            ("ce_source", SOURCE),
            ("ce_type", SUPPRESSION_CE_TYPE),
            ("ce_time", at.isoformat().encode()),
            ("content-type", envelope.CONTENT_TYPE),
        ]
        if correlation_id:
            shared.append((envelope.CORRELATION_HEADER, correlation_id.encode()))
        base = {
            "source_id": source_id,
            "kind": "message" if kind == "message" else "announcement",
            "server_id": server_id,
            "channel_id": channel_id,
            "at": at.isoformat(),
        }
        topic = self.suppressions_topic
        for user_id, reason in users:
            value = orjson.dumps({**base, "user_id": user_id, "reason": reason})
            headers: envelope.Headers = [("ce_id", f"{source_id}/{user_id}".encode()), *shared]
            try:
                self._produce(topic, value, user_id, headers=headers)
            except BufferError:
                self.producer.produce(topic, key=user_id, value=value, headers=headers)
            self._since_poll += 1
            if self._since_poll >= POLL_EVERY:
                self._since_poll = 0
                self.producer.poll(0)
        return len(users)

    def summary(
        self,
        *,
        source_id: str,
        kind: str,
        recipients: int,
        suppressed: Mapping[str, int],
        correlation_id: str | None,
    ) -> None:
        """Queue the FanoutCompleted record of one source event, after its notifications
        (same producer, so it is confirmed by the same `flush`)."""
        event = FanoutCompleted(
            source_id=source_id,
            kind="message" if kind == "message" else "announcement",
            recipients=recipients,
            suppressed={reason: n for reason, n in suppressed.items() if n},
            at=datetime.now(UTC),
        )
        value, headers = envelope.encode(
            event,
            ce_type=SUMMARY_CE_TYPE,
            source=SOURCE.decode(),
            correlation_id=correlation_id,
        )
        self.producer.produce(self.results_topic, key=source_id, value=value, headers=headers)

    def mark(self) -> int:
        """Take before emitting a batch; pass to `flush`."""
        return self.producer.failure_mark()

    def flush(self, timeout: float = 30.0, *, since: int | None = None) -> None:
        """Block until every emitted record is confirmed; raise PublishError if any write
        failed since `since` (another agent's included: then both retry)."""
        self.producer.flush(timeout, since=since)
