"""The feed writer: persists notify.notifications.v1 into the `notifications` table.

Kafka delivers at least once, so the same notification may arrive again after a crash or
a rebalance; the insert is idempotent on notification_id (which the fanout derives from the
source event and the recipient), and a redelivered notification keeps its place and its
read state.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import sqlalchemy.exc
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka import lanes
from notify_common.kafka.codec import PermanentError
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import ConsumerRunner, Received
from notify_inbox.settings import InboxSettings
from notify_schemas.models import NotificationCreated

logger = log.get(__name__)

GROUP = "notify-inbox"
# A database that cannot be reached is waited for, never blamed on the messages.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    psycopg.OperationalError,
)

# A batch is COPYed (binary) into a session-local staging table and moved into the feed by
# one INSERT ... SELECT: COPY is PostgreSQL's fastest way in, and the INSERT adds what COPY
# cannot do, skipping notifications already stored (or repeated within the batch). The
# staging table lives as long as the session (no catalog churn per batch); the move empties
# it, so batches sharing a transaction never see each other's rows. Rows move in the order
# Kafka delivered them (ord), so `seq` keeps that order.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS inbox_staging (
    ord bigint GENERATED ALWAYS AS IDENTITY,
    notification_id uuid NOT NULL,
    user_id text NOT NULL,
    type text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    action_url text,
    metadata jsonb NOT NULL,
    priority text NOT NULL,
    critical boolean NOT NULL,
    channels text[] NOT NULL,
    created_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""
_COPY = """
COPY inbox_staging (
    notification_id, user_id, type, title, body, action_url, metadata, priority, critical,
    channels, created_at
) FROM STDIN (FORMAT BINARY)
"""
_COPY_TYPES = [
    "uuid", "text", "text", "text", "text", "text", "jsonb", "text", "bool", "text[]",
    "timestamptz",
]  # fmt: skip
_MOVE = """
WITH staged AS (DELETE FROM inbox_staging RETURNING *)
INSERT INTO notifications (
    notification_id, user_id, type, title, body, action_url, metadata, priority, critical,
    channels, created_at
)
SELECT notification_id, user_id, type, title, body, action_url, metadata, priority, critical,
       channels, created_at
FROM staged ORDER BY ord
ON CONFLICT (notification_id) DO NOTHING
"""


def _as_is(json_text: str) -> str:
    return json_text


def persist(engine_or_conn: Engine | Connection, events: Sequence[NotificationCreated]) -> int:
    """Insert the notifications that are not stored yet; return how many were new.

    Given an Engine, runs in its own transaction and commits before returning. Given a
    Connection, runs in that connection's transaction and leaves the commit to the caller.
    Raises psycopg errors as they are (psycopg.OperationalError when the database is gone,
    psycopg.DataError for a value PostgreSQL cannot hold).
    """
    if not events:
        return 0
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.begin() as conn:
            return _insert(conn, events)
    return _insert(engine_or_conn, events)


def _insert(conn: Connection, events: Sequence[NotificationCreated]) -> int:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection), "the inbox needs the psycopg 3 driver"
    with raw.cursor() as cur:
        cur.execute(_STAGING)
        with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for e in events:
                copy.write_row(
                    (
                        e.notification_id,
                        e.user_id,
                        e.type,
                        e.title,
                        e.body,
                        e.action_url,
                        # Serialised once, by pydantic, not again by psycopg.
                        Jsonb(e.metadata.model_dump_json(exclude_none=True), dumps=_as_is),
                        e.priority,
                        e.critical,
                        e.channels,
                        e.created_at,
                    )
                )
        cur.execute(_MOVE)
        return cur.rowcount


class PersistNotifications:
    """The handler: store a batch of NotificationCreated events (retried by the runner)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, batch: list[Received]) -> None:
        events = []
        for item in batch:
            if not isinstance(item.event, NotificationCreated):
                raise PermanentError(f"expected NotificationCreated, got {type(item.event)}")
            events.append(item.event)
        try:
            inserted = persist(self.engine, events)
        except (psycopg.DataError, sqlalchemy.exc.DataError) as exc:
            # Valid per the contract yet impossible to store (e.g. a NUL character in a
            # text): retrying cannot help, so the runner isolates and dead-letters it.
            reason = getattr(exc, "orig", None) or exc
            raise PermanentError(f"PostgreSQL refused the data: {reason}") from exc
        metrics.INBOX_PERSISTED.inc(inserted)
        metrics.INBOX_DUPLICATES.inc(len(events) - inserted)
        # One line per notification so that a grep of the correlation id follows a message
        # through every service; ids only, never the content.
        for item in batch:
            logger.info(
                "notification stored",
                notification_id=item.event_id,
                correlation_id=item.correlation_id,
            )


def build_runner(
    settings: InboxSettings,
    engine: Engine,
    *,
    producer: EventProducer | None = None,
    lane: lanes.Lane = lanes.BULK,
) -> ConsumerRunner:
    """The consumer of one lane: notify.notifications.v1 (group notify-inbox) or
    notify.notifications-priority.v1 (group notify-inbox-priority), each its own runner
    so a bulk backlog never delays the priority lane; call `run()` in a thread."""
    return ConsumerRunner(
        settings=settings,
        group=lanes.group_for(GROUP, lane),
        topics=[lanes.topic_for(lane)],
        handler=PersistNotifications(engine),
        producer=producer,
        batch_size=settings.inbox_consumer_batch_size,
        unavailable=UNAVAILABLE,
    )
