"""Read-state changes as events, so the user's other tabs and devices follow.

`record_change` runs inside the transaction that changed `read_at` and adds a
ReadStateChanged event to the outbox, which the relay publishes to notify.read-state.v1
after commit: a change is announced if and only if it was committed. The event carries the
user's unread count as that transaction saw it, so a client can set its badge without
asking. See docs/decisions/0004-realtime-read-state.md.
"""

from __future__ import annotations

import uuid
from typing import Literal, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from notify_common.db.models import Notification, OutboxRow
from notify_schemas import envelope, topics
from notify_schemas.models import ReadStateChanged

SOURCE = "/notify/inbox"

_notifications = cast(Table, Notification.__table__)
_outbox = cast(Table, OutboxRow.__table__)


def record_change(
    session: Session,
    *,
    user_id: str,
    scope: Literal["one", "all"],
    read: bool,
    notification_id: uuid.UUID | None = None,
) -> ReadStateChanged:
    """Queue the event of a change made in `session`'s open transaction (not committed here)."""
    unread = session.execute(
        select(func.count()).where(
            _notifications.c.user_id == user_id, _notifications.c.read_at.is_(None)
        )
    ).scalar_one()
    event = ReadStateChanged(
        change_id=uuid.uuid4(),
        user_id=user_id,
        scope=scope,
        notification_id=notification_id,
        read=read,
        unread_count=int(unread),
        changed_at=envelope.now(),
    )
    ce_type = topics.topic(topics.READ_STATE).ce_type
    assert ce_type is not None, "the read-state manifest names its CloudEvents type"
    value, headers = envelope.encode(
        event, ce_type=ce_type, source=SOURCE, event_id=str(event.change_id)
    )
    session.execute(
        insert(_outbox).values(
            topic=topics.READ_STATE,
            key=user_id,
            value=value,
            headers=envelope.decode_headers(headers),
        )
    )
    return event
