"""Scheduled announcements: held in PostgreSQL until send_at, then released to Kafka.

Nothing waits inside a consumer: an announcement whose send_at is in the future is a row in
`scheduled_announcements`, and a releaser loop in every ingest replica publishes the rows
that are due. Replicas share the work with `FOR UPDATE SKIP LOCKED`: a row is claimed by
one of them, published and confirmed by the broker, then marked released in the same
transaction. A crash between the broker's confirmation and the commit publishes the row
again after the restart; it is the same event (same event id and announcement id), so the
fanout produces the same notification ids and every channel de-duplicates it.

Cancelling (DELETE /v1/announcements/{id}) marks a row cancelled while it is still
scheduled; a row being released at that moment is locked, so cancel and release never both
win. State survives every restart because it lives only in PostgreSQL.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, text

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka.producer import EventProducer, PublishError
from notify_common.settings import CommonSettings
from notify_ingest.ids import announcement_event_id
from notify_schemas import envelope, topics
from notify_schemas.models import AnnouncementRequested

logger = log.get(__name__)

State = Literal["scheduled", "released", "cancelled"]
CE_TYPE = "io.notify.AnnouncementRequested"


@dataclass(frozen=True)
class Scheduled:
    announcement_id: str
    state: State
    send_at: datetime
    released_at: datetime | None = None
    cancelled_at: datetime | None = None


def hold(
    db: Engine, event: AnnouncementRequested, *, key: str, correlation_id: str | None
) -> Scheduled:
    """Store the announcement until its send_at; idempotent on announcement_id (a re-post
    returns the stored row as it is)."""
    assert event.send_at is not None
    with db.begin() as c:
        c.execute(
            text(
                "INSERT INTO scheduled_announcements "
                "(announcement_id, event, kafka_key, correlation_id, send_at, state) "
                "VALUES (:id, CAST(:event AS jsonb), :key, :cid, :send_at, 'scheduled') "
                "ON CONFLICT (announcement_id) DO NOTHING"
            ),
            {
                "id": event.announcement_id,
                "event": event.model_dump_json(),
                "key": key,
                "cid": correlation_id,
                "send_at": event.send_at,
            },
        )
    found = get(db, event.announcement_id)
    assert found is not None
    return found


def get(db: Engine, announcement_id: str) -> Scheduled | None:
    with db.connect() as c:
        row = c.execute(
            text(
                "SELECT announcement_id, state, send_at, released_at, cancelled_at "
                "FROM scheduled_announcements WHERE announcement_id = :id"
            ),
            {"id": announcement_id},
        ).one_or_none()
    return Scheduled(*row) if row is not None else None


def cancel(db: Engine, announcement_id: str) -> Scheduled | None:
    """Cancel a scheduled announcement; the row as it then is (None: unknown id). A row
    already released stays released (the caller answers 409)."""
    with db.begin() as c:
        c.execute(
            text(
                "UPDATE scheduled_announcements SET state = 'cancelled', cancelled_at = now() "
                "WHERE announcement_id = :id AND state = 'scheduled'"
            ),
            {"id": announcement_id},
        )
    found = get(db, announcement_id)
    if found is not None and found.state == "cancelled":
        metrics.SCHEDULED_ANNOUNCEMENTS.labels(action="cancelled").inc()
    return found


def release_due(
    db: Engine, producer: EventProducer, settings: CommonSettings, *, limit: int = 100
) -> int:
    """Publish every due scheduled announcement (up to `limit`) and mark it released."""
    topic = settings.topic(topics.ANNOUNCEMENT_REQUESTED)
    with db.begin() as c:
        rows = c.execute(
            text(
                "SELECT announcement_id, event, kafka_key, correlation_id "
                "FROM scheduled_announcements "
                "WHERE state = 'scheduled' AND send_at <= now() "
                "ORDER BY send_at LIMIT :limit FOR UPDATE SKIP LOCKED"
            ),
            {"limit": limit},
        ).all()
        if not rows:
            return 0
        mark = producer.failure_mark()
        for announcement_id, event, key, correlation_id in rows:
            value, headers = _encode(event, correlation_id)
            producer.produce(topic, key=key, value=value, headers=headers)
            logger.info(
                "scheduled announcement released",
                announcement_id=announcement_id,
                correlation_id=correlation_id,
            )
        # Raises when anything failed: the transaction rolls back and the rows stay due.
        producer.flush(10.0, since=mark)
        c.execute(
            text(
                "UPDATE scheduled_announcements SET state = 'released', released_at = now() "
                "WHERE announcement_id = ANY(:ids)"
            ),
            {"ids": [r[0] for r in rows]},
        )
    metrics.SCHEDULED_ANNOUNCEMENTS.labels(action="released").inc(len(rows))
    return len(rows)


def _encode(event: dict[str, Any], correlation_id: str | None) -> tuple[bytes, envelope.Headers]:
    model = AnnouncementRequested.model_validate(event)
    return envelope.encode(
        model,
        ce_type=CE_TYPE,
        source="/notify/ingest",
        event_id=announcement_event_id(model.announcement_id),
        correlation_id=correlation_id,
    )


class Releaser:
    """The loop that releases due announcements, one per ingest process."""

    def __init__(
        self, db: Engine, producer: EventProducer, settings: CommonSettings, interval_s: float
    ) -> None:
        self.db, self.producer, self.settings = db, producer, settings
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="schedule-releaser", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.release_once() and not self._stop.is_set():
                    pass
            except PublishError as exc:
                logger.warning("scheduled announcements not confirmed; retrying", error=str(exc))
            except Exception as exc:  # the database may be away: try again next tick
                logger.warning("releasing scheduled announcements failed", error=str(exc))
            self._stop.wait(self.interval_s)

    def release_once(self) -> int:
        return release_due(self.db, self.producer, self.settings)
