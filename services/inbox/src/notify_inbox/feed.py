"""The in-app feed: list, count, mark read.

The feed is ordered by `seq`, which PostgreSQL assigns at insert. A user's notifications
all arrive through one partition of notify.notifications.v1 (key user_id), so one consumer
inserts them one batch after another and a newer row always gets a larger seq than every
row a reader may already have seen. A cursor "older than seq N" therefore names the same
rows however many notifications arrive while a user pages.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.orm import Session

from notify_common.db.models import Notification
from notify_inbox import readstate
from notify_inbox.deps import CurrentUser, SessionDep
from notify_schemas.models import ChannelName, NotificationType, Priority

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_CURSOR_VERSION = "v1"

notifications = cast(Table, Notification.__table__)
_c = notifications.c
_COLUMNS = (
    _c.notification_id,
    _c.seq,
    _c.user_id,
    _c.type,
    _c.title,
    _c.body,
    _c.action_url,
    _c.metadata,
    _c.priority,
    _c.critical,
    _c.channels,
    _c.created_at,
    _c.read_at,
)


class InvalidCursor(ValueError):
    """The cursor was not issued by this API (→ 400)."""


class NotificationOut(BaseModel):
    notification_id: uuid.UUID
    user_id: str
    type: NotificationType
    title: str
    body: str
    action_url: str | None
    metadata: dict[str, Any]
    priority: Priority
    critical: bool
    channels: list[ChannelName]
    created_at: datetime
    read: bool
    read_at: datetime | None


class FeedPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None = None


class UnreadCount(BaseModel):
    unread: int


class ReadState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    read: bool


class MarkedRead(BaseModel):
    updated: int


def encode_cursor(seq: int) -> str:
    # Versioned so the format can change without misreading cursors clients still hold.
    raw = f"{_CURSOR_VERSION}:{seq}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> int:
    """The seq a cursor points below; raise InvalidCursor with the reason."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("not a cursor returned by this API (not base64url)") from None
    version, _, seq = raw.partition(":")
    if version != _CURSOR_VERSION or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
        raise InvalidCursor("not a cursor returned by this API")
    return int(seq)


def _out(row: Row[*tuple[Any, ...]]) -> NotificationOut:
    return NotificationOut(
        notification_id=row.notification_id,
        user_id=row.user_id,
        type=row.type,
        title=row.title,
        body=row.body,
        action_url=row.action_url,
        metadata=row.metadata,
        priority=row.priority,
        critical=row.critical,
        channels=row.channels,
        created_at=row.created_at,
        read=row.read_at is not None,
        read_at=row.read_at,
    )


def list_notifications(
    *,
    session: Session,
    user_id: str,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    unread_only: bool = False,
) -> FeedPage:
    """One page of the user's feed, newest first; `next_cursor` is None on the last page."""
    query = select(*_COLUMNS).where(_c.user_id == user_id)
    if cursor is not None:
        query = query.where(_c.seq < decode_cursor(cursor))
    if unread_only:
        query = query.where(_c.read_at.is_(None))
    # One row more than asked tells whether another page exists without a COUNT.
    rows = session.execute(query.order_by(_c.seq.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].seq) if len(rows) > limit else None
    return FeedPage(items=[_out(r) for r in page], next_cursor=next_cursor)


def unread_count(*, session: Session, user_id: str) -> int:
    query = select(func.count()).where(_c.user_id == user_id, _c.read_at.is_(None))
    return int(session.execute(query).scalar_one())


def set_read(
    *, session: Session, user_id: str, notification_id: uuid.UUID, read: bool
) -> NotificationOut | None:
    """Mark one of the user's notifications read or unread and commit; None when the user
    has no notification with that id (someone else's is indistinguishable from none)."""
    # Re-marking a read notification keeps its original read_at.
    read_at = func.coalesce(_c.read_at, func.now()) if read else None
    row = session.execute(
        update(notifications)
        .where(_c.notification_id == notification_id, _c.user_id == user_id)
        .values(read_at=read_at)
        .returning(*_COLUMNS)
    ).one_or_none()
    if row is not None:
        # Announced in the same transaction (outbox): the user's other tabs follow.
        readstate.record_change(
            session, user_id=user_id, scope="one", notification_id=notification_id, read=read
        )
    session.commit()
    return None if row is None else _out(row)


def mark_all_read(*, session: Session, user_id: str) -> int:
    """Mark every unread notification of the user read and commit; return how many."""
    result = session.execute(
        update(notifications)
        .where(_c.user_id == user_id, _c.read_at.is_(None))
        .values(read_at=func.now())
    )
    if result.rowcount:  # type: ignore[attr-defined]
        readstate.record_change(session, user_id=user_id, scope="all", read=True)
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


router = APIRouter(tags=["feed"])


@router.get("/notifications", response_model=FeedPage)
def get_notifications(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="next_cursor of the previous page; omit for the first"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    unread_only: bool = False,
) -> FeedPage:
    """The caller's notifications, newest first, a page at a time."""
    try:
        return list_notifications(
            session=session,
            user_id=user.user_id,
            cursor=cursor,
            limit=limit,
            unread_only=unread_only,
        )
    except InvalidCursor as exc:
        raise HTTPException(status_code=400, detail=f"invalid cursor: {exc}") from None


@router.get("/notifications/unread-count", response_model=UnreadCount)
def get_unread_count(user: CurrentUser, session: SessionDep) -> UnreadCount:
    return UnreadCount(unread=unread_count(session=session, user_id=user.user_id))


@router.post("/notifications/mark-all-read", response_model=MarkedRead)
def post_mark_all_read(user: CurrentUser, session: SessionDep) -> MarkedRead:
    return MarkedRead(updated=mark_all_read(session=session, user_id=user.user_id))


@router.patch(
    "/notifications/{notification_id}",
    response_model=NotificationOut,
    responses={404: {"description": "the caller has no notification with this id"}},
)
def patch_notification(
    notification_id: uuid.UUID, body: ReadState, user: CurrentUser, session: SessionDep
) -> NotificationOut:
    """Mark one notification read or unread."""
    out = set_read(
        session=session, user_id=user.user_id, notification_id=notification_id, read=body.read
    )
    if out is None:
        raise HTTPException(status_code=404, detail="notification not found")
    return out
