"""The admin API (/v1/admin, admin role): dead letters, message status, pipeline stats.

Reads the tables the admin consumers keep (admin_consumers.py) and the feed. Requeueing a
dead letter republishes the original record to its original topic; the row is locked and
marked in the same transaction that waits for the broker's confirmation, so however often
(or concurrently) a requeue is asked for, an entry is published once.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.orm import Session

from notify_common import metrics
from notify_common.db.models import DlqEntryRow, FanoutResultRow
from notify_common.kafka.producer import EventProducer, PublishError, base_topic
from notify_inbox import suppression_log
from notify_inbox.deps import AdminUser, SessionDep, SettingsDep
from notify_inbox.suppression_log import InvalidCursor, SuppressionFilters, SuppressionPage
from notify_schemas.envelope import Headers
from notify_schemas.topics import DLQ

router = APIRouter(prefix="/admin", tags=["admin"])

Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# A bulk requeue handles at most this many entries per call (the response says how many
# matched and were left, so a caller repeats it).
MAX_BULK = 5_000
REQUEUED_FROM_HEADER = "notify_requeued_from"
REQUEUED_AT_HEADER = "notify_requeued_at"
PREVIEW_CHARS = 2_000
CHANNELS = ("in_app", "push", "email")
WINDOWS = {"15m": timedelta(minutes=15), "24h": timedelta(hours=24)}

# Header names and JSON keys whose values are never shown (tokens, keys, credentials).
_SECRET = re.compile(r"auth|token|secret|passw|cookie|credential|p256dh|private|signature", re.I)
_REDACTED = "[redacted]"


# --- the producer used for requeues ----------------------------------------------------

_producer_lock = threading.Lock()


def get_producer(request: Request, settings: SettingsDep) -> Callable[[], EventProducer]:
    """The app's producer for requeues, created on first use (the API needs no broker until
    something is published); closed by the app's shutdown."""

    def producer() -> EventProducer:
        with _producer_lock:
            existing = getattr(request.app.state, "admin_producer", None)
            if existing is None:
                existing = request.app.state.admin_producer = EventProducer(settings)
            return existing

    return producer


ProducerDep = Annotated[Callable[[], EventProducer], Depends(get_producer)]


# --- dead letters ------------------------------------------------------------------------


class DlqFilters(BaseModel):
    topic: str | None = Field(default=None, max_length=249)
    error_class: str | None = Field(default=None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None
    requeued: bool | None = None


class DlqEntryOut(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    consumer_group: str
    key: str | None
    headers: dict[str, str]
    value_bytes: int
    value_preview: str | None = Field(
        description="The value as text (JSON with secret-looking fields redacted), truncated"
    )
    error_class: str
    reason: str
    attempts: int
    dead_lettered_at: datetime
    requeued_at: datetime | None
    requeue_count: int


class DlqPage(BaseModel):
    items: list[DlqEntryOut]
    next_cursor: str | None = None


class RequeueResult(BaseModel):
    id: int
    status: Literal["requeued", "already_requeued"]
    topic: str
    requeued_at: datetime


class BulkRequeueResult(BaseModel):
    requeued: int
    remaining: int = Field(description="Matching entries left for another call (over the cap)")


class DlqCount(BaseModel):
    topic: str
    error_class: str
    total: int
    requeued: int
    not_requeued: int


class DlqStats(BaseModel):
    total: int
    requeued: int
    not_requeued: int
    by_topic: dict[str, int]
    by_error_class: dict[str, int]
    groups: list[DlqCount]


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _REDACTED if _SECRET.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def value_preview(value: bytes | None) -> str | None:
    """The value for a human: JSON with secret-looking fields redacted; other bytes as text
    (replacement characters for non-UTF-8). Truncated to PREVIEW_CHARS."""
    if value is None:
        return None
    try:
        shown = json.dumps(_redact(json.loads(value)), ensure_ascii=False)
    except ValueError:
        shown = value.decode("utf-8", "replace")
    return shown[:PREVIEW_CHARS]


def safe_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: (_REDACTED if _SECRET.search(k) else v) for k, v in headers.items()}


def _entry_out(row: DlqEntryRow) -> DlqEntryOut:
    return DlqEntryOut(
        id=row.id,
        topic=base_topic(row.original_topic),
        partition=row.original_partition,
        offset=row.original_offset,
        consumer_group=row.consumer_group,
        key=row.key.decode("utf-8", "replace") if row.key is not None else None,
        headers=safe_headers(row.headers),
        value_bytes=len(row.value or b""),
        value_preview=value_preview(row.value),
        error_class=row.error_class,
        reason=row.reason,
        attempts=row.attempts,
        dead_lettered_at=row.dead_lettered_at,
        requeued_at=row.requeued_at,
        requeue_count=row.requeue_count,
    )


def _filtered(query: Q, filters: DlqFilters, *, topic_prefix: str) -> Q:
    c = DlqEntryRow
    if filters.topic:
        # The contract name or the full (prefixed) one.
        query = query.where(c.original_topic.in_({filters.topic, f"{topic_prefix}{filters.topic}"}))
    if filters.error_class:
        query = query.where(c.error_class == filters.error_class)
    if filters.since:
        query = query.where(c.dead_lettered_at >= filters.since)
    if filters.until:
        query = query.where(c.dead_lettered_at < filters.until)
    if filters.requeued is not None:
        query = query.where(
            c.requeued_at.is_not(None) if filters.requeued else c.requeued_at.is_(None)
        )
    return query


def list_dead_letters(
    *, session: Session, filters: DlqFilters, topic_prefix: str, cursor: int | None, limit: int
) -> DlqPage:
    """Newest first; the cursor is the id below which the next page starts."""
    query = _filtered(select(DlqEntryRow), filters, topic_prefix=topic_prefix)
    if cursor is not None:
        query = query.where(DlqEntryRow.id < cursor)
    rows = session.scalars(query.order_by(DlqEntryRow.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return DlqPage(items=[_entry_out(r) for r in page], next_cursor=next_cursor)


def dead_letter_stats(*, session: Session, filters: DlqFilters, topic_prefix: str) -> DlqStats:
    c = DlqEntryRow
    requeued = func.count().filter(c.requeued_at.is_not(None))
    query = _filtered(
        select(c.original_topic, c.error_class, func.count(), requeued).group_by(
            c.original_topic, c.error_class
        ),
        filters,
        topic_prefix=topic_prefix,
    )
    groups = [
        DlqCount(
            topic=base_topic(topic),
            error_class=error_class,
            total=total,
            requeued=done,
            not_requeued=total - done,
        )
        for topic, error_class, total, done in session.execute(query).all()
    ]
    by_topic: dict[str, int] = {}
    by_class: dict[str, int] = {}
    for g in groups:
        by_topic[g.topic] = by_topic.get(g.topic, 0) + g.total
        by_class[g.error_class] = by_class.get(g.error_class, 0) + g.total
    total = sum(g.total for g in groups)
    done = sum(g.requeued for g in groups)
    return DlqStats(
        total=total,
        requeued=done,
        not_requeued=total - done,
        by_topic=by_topic,
        by_error_class=by_class,
        groups=sorted(groups, key=lambda g: (g.topic, g.error_class)),
    )


def _requeue_headers(row: DlqEntryRow, at: datetime) -> Headers:
    marks = (REQUEUED_FROM_HEADER, REQUEUED_AT_HEADER)
    headers: Headers = [(k, v.encode()) for k, v in row.headers.items() if k not in marks]
    headers += [
        (REQUEUED_FROM_HEADER, f"dlq:{row.id}".encode()),
        (REQUEUED_AT_HEADER, at.isoformat().encode()),
    ]
    return headers


def _publish(producer: Callable[[], EventProducer], rows: list[DlqEntryRow], at: datetime) -> None:
    out = producer()
    for row in rows:
        out.produce(
            row.original_topic, key=row.key, value=row.value, headers=_requeue_headers(row, at)
        )
    try:
        out.flush()
    except PublishError as exc:
        # Nothing is marked (the transaction rolls back): the caller may simply retry. The
        # broker may still have taken some of them; consumers are idempotent by event id.
        raise HTTPException(
            status_code=503,
            detail=f"the broker did not confirm the requeue; retry later ({exc})",
            headers={"Retry-After": "5"},
        ) from None


def _mark_requeued(session: Session, rows: list[DlqEntryRow], at: datetime) -> None:
    session.execute(
        update(DlqEntryRow)
        .where(DlqEntryRow.id.in_([r.id for r in rows]))
        .values(requeued_at=at, requeue_count=DlqEntryRow.requeue_count + 1)
    )
    for row in rows:
        metrics.ADMIN_DLQ_REQUEUED.labels(topic=base_topic(row.original_topic)).inc()


class NotRequeueable(Exception):
    """The entry has no original topic to go back to (→ 409)."""


def requeue_one(
    *, session: Session, producer: Callable[[], EventProducer], entry_id: int, topic_prefix: str
) -> RequeueResult:
    """Republish one dead letter to its original topic, once. Blocks until the broker
    confirmed it; commits the mark only then. Raises LookupError for an unknown id,
    NotRequeueable for a record that reached the DLQ without saying where it came from."""
    row = session.scalars(
        select(DlqEntryRow).where(DlqEntryRow.id == entry_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise LookupError(entry_id)
    topic = base_topic(row.original_topic)
    if row.original_topic == f"{topic_prefix}{DLQ}":
        session.rollback()
        raise NotRequeueable("this record has no original topic (it carries no dlq_* headers)")
    if row.requeued_at is not None:
        done = RequeueResult(
            id=row.id, status="already_requeued", topic=topic, requeued_at=row.requeued_at
        )
        session.rollback()
        return done
    at = datetime.now(UTC)
    _publish(producer, [row], at)
    _mark_requeued(session, [row], at)
    session.commit()
    return RequeueResult(id=entry_id, status="requeued", topic=topic, requeued_at=at)


def requeue_matching(
    *,
    session: Session,
    producer: Callable[[], EventProducer],
    filters: DlqFilters,
    topic_prefix: str,
) -> BulkRequeueResult:
    """Republish every matching dead letter not requeued yet (at most MAX_BULK per call).
    Entries another request is requeueing right now are skipped, never published twice."""
    pending = filters.model_copy(update={"requeued": False})
    query = _filtered(select(DlqEntryRow), pending, topic_prefix=topic_prefix).where(
        DlqEntryRow.original_topic != f"{topic_prefix}{DLQ}"
    )
    rows = list(
        session.scalars(
            query.order_by(DlqEntryRow.id).limit(MAX_BULK).with_for_update(skip_locked=True)
        ).all()
    )
    if rows:
        at = datetime.now(UTC)
        _publish(producer, rows, at)
        _mark_requeued(session, rows, at)
    session.commit()
    left = session.scalar(
        _filtered(
            select(func.count()).select_from(DlqEntryRow), pending, topic_prefix=topic_prefix
        ).where(DlqEntryRow.original_topic != f"{topic_prefix}{DLQ}")
    )
    return BulkRequeueResult(requeued=len(rows), remaining=left or 0)


def _filters(
    topic: Annotated[
        str | None, Query(max_length=249, description="Original topic, e.g. notify.users.v1")
    ] = None,
    error_class: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query(description="Dead-lettered at or after")] = None,
    until: Annotated[datetime | None, Query(description="Dead-lettered before")] = None,
    requeued: Annotated[bool | None, Query()] = None,
) -> DlqFilters:
    return DlqFilters(
        topic=topic, error_class=error_class, since=since, until=until, requeued=requeued
    )


FiltersDep = Annotated[DlqFilters, Depends(_filters)]


@router.get("/dlq", response_model=DlqPage)
def get_dead_letters(
    _admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    filters: FiltersDep,
    cursor: Annotated[
        str | None, Query(max_length=20, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> DlqPage:
    """Dead letters, newest first, with their origin and error (secrets redacted)."""
    if cursor is not None and not cursor.isdigit():
        raise HTTPException(status_code=400, detail="invalid cursor")
    return list_dead_letters(
        session=session,
        filters=filters,
        topic_prefix=settings.topic_prefix,
        cursor=int(cursor) if cursor is not None else None,
        limit=limit,
    )


@router.get("/dlq/stats", response_model=DlqStats)
def get_dead_letter_stats(
    _admin: AdminUser, session: SessionDep, settings: SettingsDep, filters: FiltersDep
) -> DlqStats:
    """Dead letters counted by original topic and error class, requeued or not."""
    return dead_letter_stats(session=session, filters=filters, topic_prefix=settings.topic_prefix)


@router.post("/dlq/requeue", response_model=BulkRequeueResult)
def post_requeue_matching(
    _admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    producer: ProducerDep,
    filters: DlqFilters,
) -> BulkRequeueResult:
    """Requeue every matching dead letter not requeued yet (body: the list filters)."""
    return requeue_matching(
        session=session, producer=producer, filters=filters, topic_prefix=settings.topic_prefix
    )


@router.post("/dlq/{entry_id}/requeue", response_model=RequeueResult)
def post_requeue(
    entry_id: int,
    _admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    producer: ProducerDep,
) -> RequeueResult:
    """Republish the original record to its original topic (header notify_requeued_from).
    A second call publishes nothing and answers status "already_requeued"."""
    try:
        return requeue_one(
            session=session,
            producer=producer,
            entry_id=entry_id,
            topic_prefix=settings.topic_prefix,
        )
    except LookupError:
        raise HTTPException(status_code=404, detail="no such dead letter") from None
    except NotRequeueable as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


# --- message status ----------------------------------------------------------------------


class FanoutOut(BaseModel):
    kind: str
    recipients: int
    suppressed: dict[str, int]
    suppressed_total: int
    at: datetime


class ChannelStatus(BaseModel):
    listed: int = Field(description="Notifications of the message that list this channel")
    sent: int
    failed: int
    deferred: int
    suppressed: int
    pending: int


class MessageStatus(BaseModel):
    message_id: str
    fanout: FanoutOut | None = Field(description="None until the fanout's summary arrived")
    notifications: int = Field(description="Notifications of the message in the feed")
    channels: dict[str, ChannelStatus]


_CHANNEL_COUNTS = text(
    """
    SELECT ch.channel,
           count(*) AS listed,
           count(*) FILTER (WHERE d.outcome = 'sent') AS sent,
           count(*) FILTER (WHERE d.outcome IN ('failed', 'deactivated')) AS failed,
           count(*) FILTER (WHERE d.outcome = 'deferred') AS deferred,
           count(*) FILTER (WHERE d.outcome = 'suppressed') AS suppressed,
           count(*) FILTER (WHERE d.outcome IS NULL) AS pending
    FROM notifications n
    CROSS JOIN LATERAL unnest(n.channels) AS ch(channel)
    LEFT JOIN delivery_outcomes d
           ON d.notification_id = n.notification_id AND d.channel = ch.channel
    WHERE n.metadata ->> 'message_id' = :id OR n.metadata ->> 'announcement_id' = :id
    GROUP BY ch.channel
    """
)
_FEED_COUNT = text(
    """
    SELECT count(*) FROM notifications n
    WHERE n.metadata ->> 'message_id' = :id OR n.metadata ->> 'announcement_id' = :id
    """
)


def message_status(*, session: Session, message_id: str) -> MessageStatus | None:
    """What became of one message (or announcement): the fanout's numbers and, per channel,
    the latest outcome of each notification. None when nothing is known about it."""
    result = session.get(FanoutResultRow, message_id)
    in_feed = session.scalar(_FEED_COUNT, {"id": message_id}) or 0
    if result is None and not in_feed:
        return None
    channels = {
        name: ChannelStatus(listed=0, sent=0, failed=0, deferred=0, suppressed=0, pending=0)
        for name in CHANNELS
    }
    for row in session.execute(_CHANNEL_COUNTS, {"id": message_id}).mappings():
        if row["channel"] in channels:
            channels[row["channel"]] = ChannelStatus(
                **{k: row[k] for k in ChannelStatus.model_fields}
            )
    # In-app delivery is the feed itself: a stored notification is delivered; one the
    # fanout produced that the inbox has not stored yet is pending.
    in_app = channels["in_app"]
    not_stored = max(0, result.recipients - in_feed) if result is not None else 0
    channels["in_app"] = ChannelStatus(
        listed=in_app.listed,
        sent=in_app.listed,
        failed=0,
        deferred=0,
        suppressed=0,
        pending=not_stored,
    )
    fanout = None
    if result is not None:
        fanout = FanoutOut(
            kind=result.kind,
            recipients=result.recipients,
            suppressed=result.suppressed,
            suppressed_total=sum(result.suppressed.values()),
            at=result.at,
        )
    return MessageStatus(
        message_id=message_id, fanout=fanout, notifications=in_feed, channels=channels
    )


@router.get("/messages/{message_id}", response_model=MessageStatus)
def get_message_status(
    message_id: Annotated[str, Path(max_length=128)], _admin: AdminUser, session: SessionDep
) -> MessageStatus:
    """How many recipients the fanout produced, how many it suppressed and why, and per
    channel how many deliveries are sent, failed, deferred or pending."""
    status = message_status(session=session, message_id=message_id)
    if status is None:
        raise HTTPException(status_code=404, detail="nothing is known about this message")
    return status


# --- the suppression log ------------------------------------------------------------------


def _suppression_filters(
    reason: Annotated[
        str | None, Query(max_length=500, description="e.g. not_entitled, channel_muted")
    ] = None,
    since: Annotated[datetime | None, Query(description="Decided at or after")] = None,
    until: Annotated[datetime | None, Query(description="Decided before")] = None,
) -> SuppressionFilters:
    return SuppressionFilters(reason=reason, since=since, until=until)


SuppressionFiltersDep = Annotated[SuppressionFilters, Depends(_suppression_filters)]
SuppressionCursor = Annotated[
    str | None, Query(max_length=48, description="next_cursor of the previous page")
]


@router.get("/messages/{message_id}/suppressions", response_model=SuppressionPage)
def get_message_suppressions(
    message_id: Annotated[str, Path(max_length=128)],
    _admin: AdminUser,
    session: SessionDep,
    filters: SuppressionFiltersDep,
    cursor: SuppressionCursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> SuppressionPage:
    """Who the message (or announcement) did not notify and why, newest first: the fanout's
    decisions (channel null: not notified at all) and the channels' (a notification held
    or dropped on push or email)."""
    try:
        page = suppression_log.of_message(
            session=session, source_id=message_id, filters=filters, cursor=cursor, limit=limit
        )
    except InvalidCursor:
        raise HTTPException(status_code=400, detail="invalid cursor") from None
    if page is None:
        raise HTTPException(status_code=404, detail="nothing is known about this message")
    return page


@router.get("/users/{user_id}/suppressions", response_model=SuppressionPage)
def get_user_suppressions(
    user_id: Annotated[str, Path(max_length=128)],
    _admin: AdminUser,
    session: SessionDep,
    filters: SuppressionFiltersDep,
    cursor: SuppressionCursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> SuppressionPage:
    """Every decision not to notify the user (within the retention), newest first; filter
    by reason and time."""
    try:
        return suppression_log.of_user(
            session=session, user_id=user_id, filters=filters, cursor=cursor, limit=limit
        )
    except InvalidCursor:
        raise HTTPException(status_code=400, detail="invalid cursor") from None


# --- pipeline stats ----------------------------------------------------------------------


class Rate(BaseModel):
    total: int
    per_second: float


class WindowStats(BaseModel):
    seconds: int
    notifications_persisted: Rate
    deliveries: dict[str, dict[str, Rate]] = Field(description="channel → outcome → rate")
    dlq_entries: Rate
    fanout_source_events: Rate
    fanout_recipients: Rate


class Stats(BaseModel):
    at: datetime
    windows: dict[str, WindowStats]


def _rate(total: int, seconds: float) -> Rate:
    return Rate(total=total, per_second=round(total / seconds, 4))


_WINDOW = text(
    """
    SELECT
      (SELECT count(*) FROM notifications WHERE inserted_at >= :since) AS persisted,
      (SELECT count(*) FROM dlq_entries WHERE dead_lettered_at >= :since) AS dlq,
      (SELECT count(*) FROM fanout_results WHERE at >= :since) AS sources,
      (SELECT coalesce(sum(recipients), 0) FROM fanout_results WHERE at >= :since) AS recipients
    """
)
_DELIVERIES = text(
    """
    SELECT channel, outcome, count(*) AS n FROM delivery_outcomes
    WHERE at >= :since GROUP BY channel, outcome
    """
)


def pipeline_stats(*, session: Session, now: datetime | None = None) -> Stats:
    """Totals and per-second rates over the last 15 minutes and 24 hours. Deliveries count
    each notification and channel once, with its latest outcome."""
    now = now or datetime.now(UTC)
    windows = {}
    for name, span in WINDOWS.items():
        since = now - span
        seconds = span.total_seconds()
        row = session.execute(_WINDOW, {"since": since}).mappings().one()
        deliveries: dict[str, dict[str, Rate]] = {}
        for d in session.execute(_DELIVERIES, {"since": since}).mappings():
            deliveries.setdefault(d["channel"], {})[d["outcome"]] = _rate(d["n"], seconds)
        windows[name] = WindowStats(
            seconds=int(seconds),
            notifications_persisted=_rate(row["persisted"], seconds),
            deliveries=deliveries,
            dlq_entries=_rate(row["dlq"], seconds),
            fanout_source_events=_rate(row["sources"], seconds),
            fanout_recipients=_rate(int(row["recipients"]), seconds),
        )
    return Stats(at=now, windows=windows)


@router.get("/stats", response_model=Stats)
def get_stats(_admin: AdminUser, session: SessionDep) -> Stats:
    """Pipeline totals and rates for the last 15 minutes and 24 hours."""
    return pipeline_stats(session=session)
