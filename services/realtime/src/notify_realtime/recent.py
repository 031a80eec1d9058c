"""What this instance saw go by on notify.notifications.v1 lately.

Written only by the consumer thread, read by the event loop: single dict operations are
atomic in CPython, and nothing here iterates a dict another thread changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RecentIndex:
    def __init__(
        self,
        *,
        window_s: float,
        max_users: int,
        max_ids: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_users = max_users
        self.max_ids = max_ids
        self._clock = clock
        # user_id -> (notification_id, when), oldest first (re-inserted on every update).
        self._last: dict[str, tuple[str, float]] = {}
        # notification ids in arrival order, for dropping redeliveries (a fanout replay
        # produces the same ids again).
        self._ids: dict[str, None] = {}

    def saw(self, user_id: str, notification_id: str) -> bool:
        """Record a notification; False when the same id went by recently (a redelivery)."""
        if notification_id in self._ids:
            return False
        self._ids[notification_id] = None
        if len(self._ids) > self.max_ids:
            del self._ids[next(iter(self._ids))]
        now = self._clock()
        self._last.pop(user_id, None)
        self._last[user_id] = (notification_id, now)
        self._expire(now)
        return True

    def last_seen(self, user_id: str) -> str | None:
        """The id of the user's latest notification seen within the window, if any."""
        entry = self._last.get(user_id)
        if entry is None or self._clock() - entry[1] > self.window_s:
            return None
        return entry[0]

    def _expire(self, now: float) -> None:
        last = self._last
        while last:
            oldest = next(iter(last))
            if len(last) <= self.max_users and now - last[oldest][1] <= self.window_s:
                return
            del last[oldest]

    def __len__(self) -> int:
        return len(self._last)
