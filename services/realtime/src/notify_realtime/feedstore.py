"""Read-only access to the persisted feed (the inbox owns the `notifications` table).

Used only when a stream starts: to replay what a resuming client missed and to send the
user's unread count. Blocking (psycopg); callers run it in a worker thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Engine, Table, func, select

from notify_common.db.models import Notification

notifications = cast(Table, Notification.__table__)
_c = notifications.c


class FeedStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seqs(self, *, user_id: str, notification_ids: Sequence[uuid.UUID]) -> dict[str, int]:
        """Feed positions of those of the user's notifications that are persisted."""
        query = select(_c.notification_id, _c.seq).where(
            _c.user_id == user_id, _c.notification_id.in_(list(notification_ids))
        )
        with self.engine.connect() as conn:
            return {str(row.notification_id): row.seq for row in conn.execute(query)}

    def after(self, *, user_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
        """The user's notifications persisted after `seq`, oldest first, as feed items."""
        query = (
            select(
                _c.notification_id,
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
            .where(_c.user_id == user_id, _c.seq > seq)
            .order_by(_c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        items = []
        for row in rows:
            # Column keys are SQLAlchemy's quoted_name (a str subclass), which orjson refuses.
            item = {str(key): value for key, value in row.items()}
            item["notification_id"] = str(item["notification_id"])
            item["read"] = item["read_at"] is not None
            items.append(item)
        return items

    def unread_count(self, *, user_id: str) -> int:
        query = select(func.count()).where(_c.user_id == user_id, _c.read_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
