"""An in-memory stand-in for the feed (the inbox's notifications table)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy.exc


class FakeFeed:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []  # in seq order
        self.lock = threading.Lock()
        self.down = False
        self.queries = 0

    def persist(self, item: dict[str, Any], *, read: bool = False) -> None:
        with self.lock:
            self.rows.append({**item, "seq": len(self.rows) + 1, "read": read, "read_at": None})

    def _check(self) -> None:
        self.queries += 1
        if self.down:
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    def seqs(self, *, user_id: str, notification_ids: Sequence[uuid.UUID]) -> dict[str, int]:
        self._check()
        wanted = {str(n) for n in notification_ids}
        with self.lock:
            return {
                r["notification_id"]: r["seq"]
                for r in self.rows
                if r["user_id"] == user_id and r["notification_id"] in wanted
            }

    def after(self, *, user_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
        self._check()
        with self.lock:
            rows = [r for r in self.rows if r["user_id"] == user_id and r["seq"] > seq]
        return [{k: v for k, v in r.items() if k != "seq"} for r in rows[:limit]]

    def unread_count(self, *, user_id: str) -> int:
        self._check()
        with self.lock:
            return sum(1 for r in self.rows if r["user_id"] == user_id and not r["read"])
