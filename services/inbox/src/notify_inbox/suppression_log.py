"""The suppression log: who was not notified and why, read back for the admin API, and its
retention.

The rows are written by the status consumer (admin_consumers.py): the fanout's decisions
(channel "*": no notification at all) and the channels' held or dropped deliveries (a
channel name; their source is found through the notification they are about). Lists are
newest first with keyset pagination on (at, id); the cursor is opaque to callers.
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from notify_common import logging as log
from notify_common import metrics
from notify_common.db.models import FanoutResultRow

logger = log.get(__name__)

# The channel of the fanout's decisions: no notification on any channel.
NO_CHANNEL = "*"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"^(\d{1,20})_(\d{1,20})$")


class SuppressionOut(BaseModel):
    user_id: str
    source_id: str | None = Field(description="The message or announcement id")
    kind: Literal["message", "announcement"] | None
    channel: str | None = Field(
        description="None: the fanout notified the user on no channel at all; otherwise the "
        "channel (in_app, push, email) that held or dropped their notification"
    )
    outcome: Literal["suppressed", "deferred"]
    reason: str = Field(
        description="The fanout's reason (unknown_user, not_entitled, channel_muted, "
        "not_mentioned, all_channels_off) or the channel's, as its sender reported it"
    )
    server_id: str | None
    channel_id: str | None
    notification_id: uuid.UUID
    at: datetime = Field(description="When the decision was made")


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None = None


class SuppressionFilters(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
    since: datetime | None = None
    until: datetime | None = None


class InvalidCursor(ValueError):
    pass


def encode_cursor(at: datetime, row_id: int) -> str:
    return f"{(at - _EPOCH) // timedelta(microseconds=1)}_{row_id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    match = _CURSOR.match(cursor)
    if match is None:
        raise InvalidCursor(cursor)
    try:
        at = _EPOCH + timedelta(microseconds=int(match.group(1)))
    except OverflowError:
        raise InvalidCursor(cursor) from None
    return at, int(match.group(2))


# A channel's row names no source: its notification does (the feed stores every one).
_SELECT = """
SELECT s.id, s.notification_id, s.user_id, s.channel, s.outcome, s.reason, s.at,
       coalesce(s.source_id, n.metadata ->> 'message_id', n.metadata ->> 'announcement_id')
         AS source_id,
       coalesce(s.kind, CASE WHEN n.metadata ->> 'announcement_id' IS NOT NULL
                             THEN 'announcement'
                             WHEN n.metadata ->> 'message_id' IS NOT NULL THEN 'message' END)
         AS kind,
       coalesce(s.server_id, n.metadata ->> 'server_id') AS server_id,
       coalesce(s.channel_id, n.metadata ->> 'channel_id') AS channel_id
FROM suppressions s
LEFT JOIN notifications n ON n.notification_id = s.notification_id
"""
_OF_USER = "s.user_id = :user_id"
_OF_MESSAGE = """(s.source_id = :source_id OR s.notification_id IN (
    SELECT notification_id FROM notifications
    WHERE metadata ->> 'message_id' = :source_id OR metadata ->> 'announcement_id' = :source_id))"""


def _page(
    session: Session,
    *,
    where: str,
    params: dict[str, Any],
    filters: SuppressionFilters,
    cursor: str | None,
    limit: int,
) -> SuppressionPage:
    clauses = [where]
    params = dict(params, limit=limit + 1)
    if filters.reason:
        clauses.append("s.reason = :reason")
        params["reason"] = filters.reason
    if filters.since:
        clauses.append("s.at >= :since")
        params["since"] = filters.since
    if filters.until:
        clauses.append("s.at < :until")
        params["until"] = filters.until
    if cursor is not None:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
        clauses.append("(s.at, s.id) < (:cursor_at, :cursor_id)")
    sql = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY s.at DESC, s.id DESC LIMIT :limit"
    rows = session.execute(text(sql), params).mappings().all()
    page = rows[:limit]
    items = [
        SuppressionOut(
            user_id=r["user_id"],
            source_id=r["source_id"],
            kind=r["kind"],
            channel=None if r["channel"] == NO_CHANNEL else r["channel"],
            outcome=r["outcome"],
            reason=r["reason"],
            server_id=r["server_id"],
            channel_id=r["channel_id"],
            notification_id=r["notification_id"],
            at=r["at"],
        )
        for r in page
    ]
    next_cursor = encode_cursor(page[-1]["at"], page[-1]["id"]) if len(rows) > limit else None
    return SuppressionPage(items=items, next_cursor=next_cursor)


def of_user(
    *,
    session: Session,
    user_id: str,
    filters: SuppressionFilters,
    cursor: str | None,
    limit: int,
) -> SuppressionPage:
    """Every decision not to notify one user, newest first. Raises InvalidCursor."""
    return _page(
        session,
        where=_OF_USER,
        params={"user_id": user_id},
        filters=filters,
        cursor=cursor,
        limit=limit,
    )


def of_message(
    *,
    session: Session,
    source_id: str,
    filters: SuppressionFilters,
    cursor: str | None,
    limit: int,
) -> SuppressionPage | None:
    """Who a message (or announcement) did not notify, or notified on fewer channels, and
    why, newest first. None when nothing at all is known about the message."""
    page = _page(
        session,
        where=_OF_MESSAGE,
        params={"source_id": source_id},
        filters=filters,
        cursor=cursor,
        limit=limit,
    )
    if page.items or cursor is not None or filters.model_dump(exclude_none=True):
        return page
    known = session.get(FanoutResultRow, source_id) is not None or session.scalar(
        text(
            "SELECT EXISTS (SELECT 1 FROM notifications WHERE metadata ->> 'message_id' = :id"
            " OR metadata ->> 'announcement_id' = :id)"
        ),
        {"id": source_id},
    )
    return page if known else None


# --- retention ----------------------------------------------------------------------------


def expire(
    engine: Engine, *, before: datetime, batch: int, stop: threading.Event | None = None
) -> int:
    """Delete the log's rows decided before `before`, `batch` rows per transaction (short
    locks, bounded WAL per commit), until none are left or `stop` is set. Rows another
    replica is deleting right now are skipped. Returns how many were deleted."""
    deleted = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(
                text(
                    "DELETE FROM suppressions WHERE id IN ("
                    " SELECT id FROM suppressions WHERE at < :before"
                    " LIMIT :batch FOR UPDATE SKIP LOCKED)"
                ),
                {"before": before, "batch": batch},
            ).rowcount
        deleted += n
        metrics.ADMIN_SUPPRESSIONS_EXPIRED.inc(n)
        if n < batch or (stop is not None and stop.is_set()):
            return deleted


class Retention:
    """The periodic task: every `interval_s`, delete rows older than `retention_days`."""

    def __init__(
        self, engine: Engine, *, retention_days: int, interval_s: float, batch: int
    ) -> None:
        self.engine = engine
        self.retention = timedelta(days=retention_days)
        self.interval_s = interval_s
        self.batch = batch

    def run_once(self, stop: threading.Event | None = None) -> int:
        removed = expire(
            self.engine, before=datetime.now(UTC) - self.retention, batch=self.batch, stop=stop
        )
        if removed:
            logger.info("suppression log rows past retention deleted", count=removed)
        return removed

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: a pass at once, then one per interval. A database that is
        away is tried again at the next interval."""
        while not stop.is_set():
            try:
                self.run_once(stop)
            except SQLAlchemyError as exc:
                logger.warning("suppression retention failed", error=str(exc)[:300])
            stop.wait(self.interval_s)
