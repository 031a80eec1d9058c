"""Resuming a stream: what a client that reconnects with Last-Event-ID missed.

The stream is registered (live events queue up) *before* the feed is read, so nothing can
fall between the replay and the live events; the overlap is removed by notification id.

One more gap needs care: realtime and the inbox consume notify.notifications.v1
independently, so a notification can go by here live before the inbox has persisted it.
If it went by while the client was away, it is neither live for the new stream nor in the
feed yet. So before reading the feed, the resume waits (up to `wait_s`) until the feed holds
the last notification this instance saw go by for the user: the inbox persists each
partition in order, so once that one is there, every earlier one of the user is too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import sqlalchemy.exc

from notify_common import logging as log
from notify_common import metrics
from notify_realtime import sse
from notify_realtime.feedstore import FeedStore
from notify_realtime.recent import RecentIndex

logger = log.get(__name__)


@dataclass
class Backfill:
    frames: list[bytes] = field(default_factory=list)
    notification_ids: frozenset[str] = frozenset()
    # Set when the client must reload its feed instead (the stream then ends).
    resync: str | None = None


async def backfill(
    *,
    store: FeedStore,
    recent: RecentIndex,
    user_id: str,
    last_event_id: str,
    limit: int,
    wait_s: float,
    poll_s: float = 0.05,
) -> Backfill:
    """The notifications after `last_event_id`, oldest first, or a resync reason."""
    try:
        last = uuid.UUID(last_event_id)
    except ValueError:
        return Backfill(resync="unknown_last_event_id")
    # Read after the stream was registered: anything newer arrives live.
    pending = recent.last_seen(user_id)
    wanted = [last] if pending is None else [last, uuid.UUID(pending)]
    deadline = time.monotonic() + wait_s
    try:
        while True:
            found = await asyncio.to_thread(store.seqs, user_id=user_id, notification_ids=wanted)
            last_seq = found.get(str(last))
            caught_up = pending is None or pending in found
            if last_seq is not None and caught_up:
                break
            if time.monotonic() >= deadline:
                if last_seq is None:
                    # Never persisted for this user (or not within the wait): the client
                    # cannot be resumed from it.
                    return Backfill(resync="unknown_last_event_id")
                break
            await asyncio.sleep(poll_s)
        rows = await asyncio.to_thread(store.after, user_id=user_id, seq=last_seq, limit=limit + 1)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        logger.warning("feed unavailable for a resume", error=type(exc).__name__)
        return Backfill(resync="database_unavailable")
    if len(rows) > limit:
        return Backfill(resync="backfill_limit")
    metrics.REALTIME_BACKFILLED.inc(len(rows))
    return Backfill(
        frames=[sse.notification_frame(row) for row in rows],
        notification_ids=frozenset(row["notification_id"] for row in rows),
        # What the feed has is replayed; the rest may be missing, so the client reloads.
        resync=None if caught_up else "feed_behind",
    )
