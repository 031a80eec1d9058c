"""The outbox relay: publishes the rows that preference changes wrote to the `outbox` table.

Only the holder of a PostgreSQL advisory lock publishes, so however many inbox replicas
run, rows go out one batch after another in `id` order and the order of each key's changes
survives. A batch is marked published only after the broker confirmed all of it; a crash
in between publishes it again (at-least-once). That is harmless: the topics are compacted
state keyed by entity, and a repeated change is the same state again.
"""

from __future__ import annotations

import threading
from typing import cast

from sqlalchemy import Connection, Engine, Table, func, select, update

from notify_common import logging as log
from notify_common import metrics
from notify_common.db.models import OutboxRow
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import Backoff
from notify_inbox.settings import InboxSettings

logger = log.get(__name__)

outbox = cast(Table, OutboxRow.__table__)

# One application-wide key for pg_try_advisory_lock: "notifyob" read as a big-endian
# int64 (positive, so it fits PostgreSQL's bigint).
LOCK_KEY = int.from_bytes(b"notifyob", "big")

# The relay's producer gives up on a write after this long, so that a flush always ends
# with every row either confirmed or failed (and retried by the relay).
_MESSAGE_TIMEOUT_MS = 15_000
_FLUSH_TIMEOUT_S = 20.0


class OutboxRelay:
    """Publish outbox rows until stopped. One instance per process; `run` blocks."""

    def __init__(
        self,
        *,
        settings: InboxSettings,
        engine: Engine,
        producer: EventProducer | None = None,
        batch_size: int | None = None,
        poll_interval_s: float | None = None,
        lock_retry_s: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._owns_producer = producer is None
        self.producer = producer or EventProducer(
            settings, **{"message.timeout.ms": _MESSAGE_TIMEOUT_MS}
        )
        self.batch_size = batch_size or settings.inbox_outbox_batch_size
        self.poll_interval_s = poll_interval_s or settings.inbox_outbox_poll_interval_s
        # How often a replica that is not the publisher checks whether it may take over.
        self.lock_retry_s = lock_retry_s
        self.backoff = backoff or Backoff(base=0.2, cap=5.0)
        self.is_publisher = False

    def run(self, stop: threading.Event) -> None:
        """Publish until `stop` is set, then return once the batch in hand is confirmed and
        marked. Database and broker failures are logged and retried with backoff; they
        never end the loop."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    published = self._serve(stop)
                    failures = 0
                    if not published:
                        # Another replica publishes; check now and then whether it still does.
                        stop.wait(self.lock_retry_s)
                except Exception as exc:
                    failures += 1
                    delay = self.backoff.delay(min(failures, 10))
                    logger.warning(
                        "outbox relay failed, retrying",
                        error_class=type(exc).__name__,
                        error=str(getattr(exc, "orig", None) or exc)[:300],
                        delay=round(delay, 3),
                    )
                    stop.wait(delay)
        finally:
            if self._owns_producer:
                self.producer.close()

    def _serve(self, stop: threading.Event) -> bool:
        """Publish while holding the lock and until `stop`; False when another replica holds it."""
        with self.engine.connect() as conn:
            clean = False
            try:
                locked = conn.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar_one()
                conn.commit()
                if not locked:
                    clean = True
                    return False
                self.is_publisher = True
                logger.info("outbox relay is the publisher")
                while not stop.is_set():
                    if self.publish_batch(conn) == 0:
                        stop.wait(self.poll_interval_s)
                conn.execute(select(func.pg_advisory_unlock(LOCK_KEY)))
                conn.commit()
                clean = True
                return True
            finally:
                self.is_publisher = False
                if not clean:
                    # The session may still hold the lock: close it instead of returning it to
                    # the pool, so PostgreSQL releases the lock for another replica.
                    conn.invalidate()

    def publish_batch(self, conn: Connection) -> int:
        """Publish the oldest unpublished rows (the caller holds the lock); return how many."""
        rows = conn.execute(
            select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.headers)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.id)
            .limit(self.batch_size)
        ).all()
        if len(rows) < self.batch_size:
            backlog = len(rows)
        else:
            backlog = conn.execute(
                select(func.count()).where(outbox.c.published_at.is_(None))
            ).scalar_one()
        # Hold no transaction open while waiting for the broker.
        conn.commit()
        metrics.OUTBOX_BACKLOG.set(backlog)
        if not rows:
            return 0
        for row in rows:
            self.producer.produce(
                self.settings.topic(row.topic),
                key=row.key,
                value=row.value,
                headers=[(name, value.encode()) for name, value in row.headers.items()],
            )
        self.producer.flush(_FLUSH_TIMEOUT_S)
        # Only the ids just confirmed: a lower id whose transaction commits later is not
        # published yet and must stay unpublished.
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([row.id for row in rows]))
            .values(published_at=func.now())
        )
        conn.commit()
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        metrics.OUTBOX_BACKLOG.set(max(0, backlog - len(rows)))
        return len(rows)
