"""The outbox pump: publishes email_outbox rows (outcomes, dead letters) and deletes them.

Rows are locked (FOR UPDATE SKIP LOCKED) while their batch is produced and flushed, so
several replicas pump side by side without publishing a row twice; a crash between the
broker's confirmation and the commit publishes the batch again (at least once, which the
consumers of notify.deliveries.v1 and the DLQ tolerate: an outcome repeated is the same
outcome).
"""

from __future__ import annotations

import threading
from typing import cast

from sqlalchemy import Engine, Table, delete, select

from notify_common.db.models import EmailOutboxRow
from notify_common.kafka.producer import EventProducer

outbox_t = cast(Table, EmailOutboxRow.__table__)

_FLUSH_TIMEOUT_S = 20.0


class OutboxPump:
    def __init__(self, engine: Engine, producer: EventProducer, *, batch_size: int = 500) -> None:
        self.engine = engine
        self.producer = producer
        self.batch_size = batch_size
        # One batch at a time per process: the producer's flush accounting is not shared.
        self._lock = threading.Lock()

    def publish_batch(self) -> int:
        """Publish and delete up to batch_size rows; raise (rows kept) if the broker did not
        confirm them all."""
        with self._lock, self.engine.begin() as conn:
            rows = conn.execute(
                select(outbox_t.c.id, outbox_t.c.topic, outbox_t.c.key, outbox_t.c.value)
                .add_columns(outbox_t.c.headers)
                .order_by(outbox_t.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            for row in rows:
                self.producer.produce(
                    row.topic,
                    key=row.key,
                    value=row.value,
                    headers=[(name, value.encode()) for name, value in row.headers.items()],
                )
            self.producer.flush(_FLUSH_TIMEOUT_S)
            conn.execute(delete(outbox_t).where(outbox_t.c.id.in_([row.id for row in rows])))
        return len(rows)

    def drain(self) -> int:
        """Publish until the outbox is empty (or another replica holds the rest)."""
        total = 0
        while True:
            published = self.publish_batch()
            total += published
            if published < self.batch_size:
                return total
