"""The admin API's inputs, read by two consumers of their own (so a backlog of one never
delays the feed or the other):

* notify-inbox-dlq: notify.dlq.v1 → `dlq_entries`, one row per dead letter, idempotent on
  where the original came from (topic, partition, offset, consumer group);
* notify-inbox-status: notify.fanout-results.v1 → `fanout_results` (upsert by source id),
  notify.deliveries.v1 → `delivery_outcomes` (one row per notification and channel), and
  the suppression log `suppressions`: the fanout's per-user decisions from
  notify.suppressions.v1 (channel "*") and the channels' held or dropped deliveries
  (outcome suppressed or deferred on notify.deliveries.v1), one row per notification and
  channel.

Every write is an idempotent upsert, so redelivery after a crash or a rebalance is harmless.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message
from sqlalchemy import Connection, Engine, and_, func, or_
from sqlalchemy.dialects.postgresql import insert

from notify_common import metrics
from notify_common.db.models import (
    DeliveryOutcomeRow,
    DlqEntryRow,
    FanoutResultRow,
    SuppressionRow,
)
from notify_common.kafka.codec import PermanentError
from notify_common.kafka.producer import EventProducer, base_topic
from notify_common.kafka.runner import ConsumerRunner, Received
from notify_inbox.consumer import UNAVAILABLE
from notify_inbox.settings import InboxSettings
from notify_inbox.suppression_log import NO_CHANNEL
from notify_schemas import envelope, topics
from notify_schemas.models import (
    DeliveryRecorded,
    FanoutCompleted,
    NotificationSuppressed,
    notification_id_for,
)

DLQ_GROUP = "notify-inbox-dlq"
STATUS_GROUP = "notify-inbox-status"


# --- dead letters -----------------------------------------------------------------------


def _text(value: str | bytes | None) -> str | None:
    """Header bytes as text PostgreSQL can store (text and jsonb refuse NUL characters: a
    dead letter that cannot be stored would be dead-lettered again)."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return text.replace("\x00", "\ufffd")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def dead_letter_row(msg: Message, *, dlq_topic: str) -> dict[str, Any]:
    """The dlq_entries row of one notify.dlq.v1 record. Never raises on a malformed dead
    letter: a record without the dlq_* headers is stored as its own origin (its place on
    the DLQ), so it is still listed, and is still one row however often it is redelivered."""
    original: dict[str, str] = {}
    dlq: dict[str, str] = {}
    for name, raw in envelope.header_pairs(msg.headers()):
        text = _text(raw) or ""
        (dlq if name.startswith("dlq_") else original)[_text(name) or ""] = text
    partition = msg.partition() or 0
    offset = msg.offset() or 0
    has_origin = "dlq_original_topic" in dlq
    ts_type, ts_ms = msg.timestamp()
    broker_time = datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_type and ts_ms > 0 else None
    return {
        "original_topic": dlq["dlq_original_topic"] if has_origin else dlq_topic,
        "original_partition": _int(dlq.get("dlq_original_partition"), -1)
        if has_origin
        else partition,
        "original_offset": _int(dlq.get("dlq_original_offset"), -1) if has_origin else offset,
        "consumer_group": dlq.get("dlq_consumer_group", ""),
        "key": msg.key(),
        "value": msg.value(),
        "headers": original,
        "error_class": dlq.get("dlq_error_class") or "Unknown",
        "reason": dlq.get("dlq_reason", ""),
        "attempts": _int(dlq.get("dlq_attempts"), 0),
        "dlq_partition": partition,
        "dlq_offset": offset,
        "dead_lettered_at": _time(dlq.get("dlq_failed_at")) or broker_time or datetime.now(UTC),
    }


class RecordDeadLetters:
    """The handler: store dead letters, skipping those already stored."""

    def __init__(self, engine: Engine, *, dlq_topic: str) -> None:
        self.engine = engine
        self.dlq_topic = dlq_topic

    def __call__(self, batch: list[Received]) -> None:
        rows = [dead_letter_row(item.message, dlq_topic=self.dlq_topic) for item in batch]
        if not rows:
            return
        stmt = (
            insert(DlqEntryRow)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_dlq_entries_origin")
            .returning(DlqEntryRow.original_topic)
        )
        with self.engine.begin() as conn:
            stored = Counter(base_topic(t) for t in conn.execute(stmt).scalars())
        for topic, count in stored.items():
            metrics.ADMIN_DLQ_RECORDED.labels(topic=topic).inc(count)


class DeadLetterRunner(ConsumerRunner):
    """A ConsumerRunner for notify.dlq.v1: a dead letter is stored as it is (its value may
    be exactly what failed validation), so it is never decoded against a model; failing
    that would dead-letter the dead letter."""

    def decode(self, msg: Message) -> Received:
        return Received(
            event=None,
            key=_text(msg.key()),
            headers=envelope.decode_headers(msg.headers()),
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            message=msg,
        )


def build_dlq_runner(
    settings: InboxSettings, engine: Engine, *, producer: EventProducer | None = None
) -> ConsumerRunner:
    """The consumer of notify.dlq.v1 (group notify-inbox-dlq); call `run()` in a thread."""
    return DeadLetterRunner(
        settings=settings,
        group=DLQ_GROUP,
        topics=[topics.DLQ],
        handler=RecordDeadLetters(engine, dlq_topic=settings.topic(topics.DLQ)),
        producer=producer,
        batch_size=500,
        unavailable=UNAVAILABLE,
    )


# --- message status inputs --------------------------------------------------------------


def _delivery_wins(new: DeliveryRecorded, old: DeliveryRecorded) -> bool:
    """The outcome kept for a notification on a channel: "sent" once any attempt (e.g. one
    of several browsers) was sent, otherwise the latest."""
    if (new.outcome == "sent") != (old.outcome == "sent"):
        return new.outcome == "sent"
    return new.at >= old.at


# Delivery outcomes that are decisions not to notify (now) on a channel.
HELD_OR_DROPPED = frozenset({"suppressed", "deferred"})


def fanout_suppression_row(event: NotificationSuppressed) -> dict[str, Any]:
    return {
        "notification_id": notification_id_for(event.source_id, event.user_id),
        "channel": NO_CHANNEL,
        "user_id": event.user_id,
        "source_id": event.source_id,
        "kind": event.kind,
        "server_id": event.server_id,
        "channel_id": event.channel_id,
        "outcome": "suppressed",
        "reason": event.reason,
        "at": event.at,
    }


def channel_suppression_row(event: DeliveryRecorded) -> dict[str, Any]:
    """A held or dropped delivery; its source is found through its notification."""
    return {
        "notification_id": event.notification_id,
        "channel": event.channel,
        "user_id": event.user_id,
        "source_id": None,
        "kind": None,
        "server_id": None,
        "channel_id": None,
        "outcome": event.outcome,
        "reason": event.reason or event.outcome,
        "at": event.at,
    }


def record_suppressions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert suppression log rows (at most one per (notification_id, channel) in `rows`):
    the latest decision about a notification on a channel wins; a replayed one changes
    nothing but its row's values."""
    if not rows:
        return
    stmt = insert(SuppressionRow).values(rows)
    new, old = stmt.excluded, SuppressionRow.__table__.c
    conn.execute(
        stmt.on_conflict_do_update(
            constraint="uq_suppressions_decision",
            set_={
                "user_id": new.user_id,
                "source_id": func.coalesce(new.source_id, old.source_id),
                "kind": func.coalesce(new.kind, old.kind),
                "server_id": func.coalesce(new.server_id, old.server_id),
                "channel_id": func.coalesce(new.channel_id, old.channel_id),
                "outcome": new.outcome,
                "reason": new.reason,
                "at": new.at,
                "received_at": datetime.now(UTC),
            },
            where=new.at >= old.at,
        )
    )


class RecordStatus:
    """The handler: upsert fanout summaries, delivery outcomes and the suppression log."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, batch: list[Received]) -> None:
        results: dict[str, FanoutCompleted] = {}
        deliveries: dict[tuple[uuid.UUID, str], DeliveryRecorded] = {}
        # (notification_id, channel) → the row; the latest decision of the batch wins.
        suppressions: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}

        def suppression(row: dict[str, Any]) -> None:
            key = (row["notification_id"], row["channel"])
            kept = suppressions.get(key)
            if kept is None or row["at"] >= kept["at"]:
                suppressions[key] = row

        for item in batch:
            event = item.event
            if isinstance(event, FanoutCompleted):
                results[event.source_id] = event  # a replay re-emits the same numbers
            elif isinstance(event, DeliveryRecorded):
                key = (event.notification_id, event.channel)
                kept = deliveries.get(key)
                if kept is None or _delivery_wins(event, kept):
                    deliveries[key] = event
                if event.outcome in HELD_OR_DROPPED:
                    suppression(channel_suppression_row(event))
            elif isinstance(event, NotificationSuppressed):
                suppression(fanout_suppression_row(event))
            else:
                raise PermanentError(f"unexpected event {type(event).__name__}")
        with self.engine.begin() as conn:
            record_suppressions(conn, list(suppressions.values()))
            if results:
                stmt = insert(FanoutResultRow).values(
                    [
                        {
                            "source_id": r.source_id,
                            "kind": r.kind,
                            "recipients": r.recipients,
                            "suppressed": dict(r.suppressed),
                            "at": r.at,
                        }
                        for r in results.values()
                    ]
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[FanoutResultRow.source_id],
                        set_={
                            "kind": stmt.excluded.kind,
                            "recipients": stmt.excluded.recipients,
                            "suppressed": stmt.excluded.suppressed,
                            "at": stmt.excluded.at,
                            "received_at": datetime.now(UTC),
                        },
                    )
                )
            if deliveries:
                d_stmt = insert(DeliveryOutcomeRow).values(
                    [
                        {
                            "notification_id": d.notification_id,
                            "channel": d.channel,
                            "user_id": d.user_id,
                            "outcome": d.outcome,
                            "reason": d.reason,
                            "attempt": d.attempt,
                            "at": d.at,
                        }
                        for d in deliveries.values()
                    ]
                )
                new, old = d_stmt.excluded, DeliveryOutcomeRow.__table__.c
                new_sent, old_sent = new.outcome == "sent", old.outcome == "sent"
                conn.execute(
                    d_stmt.on_conflict_do_update(
                        index_elements=[
                            DeliveryOutcomeRow.notification_id,
                            DeliveryOutcomeRow.channel,
                        ],
                        set_={
                            "user_id": new.user_id,
                            "outcome": new.outcome,
                            "reason": new.reason,
                            "attempt": new.attempt,
                            "at": new.at,
                            "received_at": datetime.now(UTC),
                        },
                        # The same rule as _delivery_wins, against the stored row.
                        where=or_(
                            and_(new_sent, ~old_sent),
                            and_(new_sent == old_sent, new.at >= old.at),
                        ),
                    )
                )
        for r in results.values():
            metrics.ADMIN_FANOUT_RESULTS.labels(kind=r.kind).inc()
        for d in deliveries.values():
            metrics.DELIVERIES.labels(channel=d.channel, outcome=d.outcome).inc()
        for row in suppressions.values():
            level = "fanout" if row["channel"] == NO_CHANNEL else "channel"
            metrics.ADMIN_SUPPRESSIONS.labels(level=level).inc()


def build_status_runner(
    settings: InboxSettings, engine: Engine, *, producer: EventProducer | None = None
) -> ConsumerRunner:
    """The consumer of notify.fanout-results.v1, notify.deliveries.v1 and
    notify.suppressions.v1 (group notify-inbox-status); call `run()` in a thread."""
    return ConsumerRunner(
        settings=settings,
        group=STATUS_GROUP,
        topics=[topics.FANOUT_RESULTS, topics.DELIVERIES, topics.SUPPRESSIONS],
        handler=RecordStatus(engine),
        producer=producer,
        batch_size=settings.inbox_consumer_batch_size,
        unavailable=UNAVAILABLE,
    )
