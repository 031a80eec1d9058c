"""Open streams by user, and the hand-over of events from Kafka to them.

Everything here runs on the event loop: the consumer thread hands records over in batches
(`loop.call_soon_threadsafe(hub.dispatch, records)`), so nothing needs a lock. The one
thing the consumer thread reads directly is `wants(user_id)`, a single dict lookup, which
lets it skip the records of users with no stream here without waking the loop.

Each stream has a bounded mailbox. A client that stops reading fills it; then the mailbox is
replaced by a resync event and the connection is cut after a grace period, so a slow client
costs at most `queue_max` events of memory and never delays anyone else.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from notify_common import logging as log
from notify_common import metrics
from notify_realtime import sse
from notify_schemas.models import ReadStateChanged

logger = log.get(__name__)


class Control(enum.Enum):
    HEARTBEAT = "heartbeat"
    CLOSED = "closed"  # the client went away
    RESYNC = "resync"  # tell the client to resync, then end the stream
    SHUTDOWN = "shutdown"  # tell the client to reconnect (elsewhere), then end the stream


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record for a user with a stream here (built by the consumer thread)."""

    kind: str  # sse.NOTIFICATION or sse.READ
    user_id: str
    value: bytes
    timestamp: float | None  # the record's Kafka timestamp, seconds since the epoch


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Ready-to-write bytes of one event (shared by every stream of the user)."""

    kind: str
    frame: bytes
    notification_id: str | None = None
    timestamp: float | None = None


Item = Outgoing | Control


class Mailbox:
    """A bounded FIFO with one waiting reader (lighter than asyncio.Queue per stream)."""

    __slots__ = ("_items", "_waiter", "limit")

    def __init__(self, limit: int) -> None:
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.limit = limit

    def put(self, item: Item) -> bool:
        """Queue an item; False (and nothing queued) when the mailbox is full.

        The limit applies only while the reader is busy (writing to a client that does not
        keep up). A reader parked in `take` takes everything at once when it runs, so a
        burst handed over in one go is accepted whole, however large: falling behind is
        what the limit is about, not the size of a burst."""
        if len(self._items) >= self.limit and self._waiter is None:
            return False
        self.force(item)
        return True

    def force(self, item: Item) -> None:
        """Queue an item whatever the limit (control items)."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._items.clear()

    async def take(self) -> list[Item]:
        """Everything queued, waiting until there is something."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


class Connection:
    """One open stream. Created by `Hub.connect`; the stream handler owns its lifetime."""

    __slots__ = (
        "_abandon_timer",
        "abandoned",
        "end_reason",
        "ended",
        "heartbeat_pending",
        "hub",
        "last_write",
        "mailbox",
        "skip_ids",
        "task",
        "user_id",
    )

    def __init__(self, hub: Hub, user_id: str, queue_max: int) -> None:
        self.hub = hub
        self.user_id = user_id
        self.mailbox = Mailbox(queue_max)
        self.task: asyncio.Task[Any] | None = None
        # Notification ids already replayed from the feed: their live copies are dropped.
        self.skip_ids: frozenset[str] = frozenset()
        self.last_write = time.monotonic()
        self.heartbeat_pending = False
        self.ended = False
        self.end_reason = ""
        self.abandoned = False
        self._abandon_timer: asyncio.TimerHandle | None = None

    def offer(self, item: Outgoing) -> None:
        if self.ended:
            return
        if not self.mailbox.put(item):
            metrics.REALTIME_RESYNCS.labels(reason="overflow").inc()
            logger.warning("stream overflowed, resync", queued=len(self.mailbox))
            self.end(Control.RESYNC, "overflow")

    def end(self, control: Control, reason: str = "") -> None:
        """Replace whatever is queued by `control`; the stream ends after writing it. A
        client that does not take it within the write timeout is cut off."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self.mailbox.clear()
        self.mailbox.force(control)
        if control is not Control.CLOSED and self.task is not None:
            loop = asyncio.get_running_loop()
            self._abandon_timer = loop.call_later(self.hub.write_timeout_s, self._abandon)

    def _abandon(self) -> None:
        if self.task is not None and not self.task.done():
            self.abandoned = True
            logger.warning("client did not read its final event in time, cutting it off")
            self.task.cancel()

    def finished(self) -> None:
        if self._abandon_timer is not None:
            self._abandon_timer.cancel()


class Hub:
    def __init__(self, *, queue_max: int, write_timeout_s: float, heartbeat_s: float) -> None:
        self.queue_max = queue_max
        self.write_timeout_s = write_timeout_s
        self.heartbeat_s = heartbeat_s
        self.by_user: dict[str, set[Connection]] = {}
        self.closing = False
        self.count = 0

    # --- called from the consumer thread ---------------------------------------------
    def wants(self, user_id: str) -> bool:
        return user_id in self.by_user

    # --- streams ---------------------------------------------------------------------
    def connect(self, user_id: str) -> Connection:
        """Register a stream: from now on the user's events are queued for it."""
        conn = Connection(self, user_id, self.queue_max)
        self.by_user.setdefault(user_id, set()).add(conn)
        self.count += 1
        metrics.REALTIME_CONNECTIONS.set(self.count)
        return conn

    def disconnect(self, conn: Connection) -> None:
        conns = self.by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        if not conns:
            del self.by_user[conn.user_id]
        conn.finished()
        self.count -= 1
        metrics.REALTIME_CONNECTIONS.set(self.count)

    def connections(self) -> Iterable[Connection]:
        for conns in list(self.by_user.values()):
            yield from list(conns)

    # --- events ----------------------------------------------------------------------
    def dispatch(self, records: list[Record]) -> None:
        """Turn each record into bytes once and queue it on every stream of its user."""
        for record in records:
            conns = self.by_user.get(record.user_id)
            if not conns:
                continue  # the user's last stream closed since the consumer looked
            try:
                item = build(record)
            except (ValueError, ValidationError, sse.FrameError) as exc:
                # Not ours to dead-letter (the inbox owns the feed's DLQ): skip and say why.
                logger.warning(
                    "undeliverable event skipped", kind=record.kind, error=str(exc)[:200]
                )
                continue
            for conn in conns:
                conn.offer(item)

    def heartbeat(self) -> None:
        """Queue a keep-alive comment on every stream that wrote nothing for a while."""
        quiet_since = time.monotonic() - self.heartbeat_s * 0.9
        for conn in self.connections():
            if conn.last_write <= quiet_since and not conn.heartbeat_pending and not conn.ended:
                conn.heartbeat_pending = True
                conn.mailbox.force(Control.HEARTBEAT)

    def begin_shutdown(self) -> None:
        """Refuse new streams; tell every open one to reconnect and end it."""
        if self.closing:
            return
        self.closing = True
        conns = list(self.connections())
        logger.info("shutting down streams", streams=len(conns))
        for conn in conns:
            conn.end(Control.SHUTDOWN, "shutdown")


def build(record: Record) -> Outgoing:
    """The event a record becomes; raise ValueError for one that breaks the contract."""
    if record.kind == sse.NOTIFICATION:
        data = orjson.loads(record.value)
        if not isinstance(data, dict):
            raise ValueError("notification is not a JSON object")
        # Routing follows the Kafka key; the payload must name the same user, or a faulty
        # producer could show one user's notification to another.
        if data.get("user_id") != record.user_id:
            raise ValueError("notification user_id does not match the record key")
        notification_id = str(uuid.UUID(str(data.get("notification_id"))))
        item = {name: data.get(name) for name in sse.FEED_FIELDS}
        item["notification_id"] = notification_id
        item["read"] = False
        item["read_at"] = None
        return Outgoing(
            kind=sse.NOTIFICATION,
            frame=sse.notification_frame(item),
            notification_id=notification_id,
            timestamp=record.timestamp,
        )
    change = ReadStateChanged.model_validate_json(record.value)
    if change.user_id != record.user_id:
        raise ValueError("read-state user_id does not match the record key")
    payload = change.model_dump(
        mode="json", include={"scope", "notification_id", "read", "unread_count", "changed_at"}
    )
    return Outgoing(
        kind=sse.READ,
        frame=sse.frame(sse.READ, sse.dumps(payload)) + sse.unread_count_frame(change.unread_count),
    )
