"""inbox persistence: notifications stored per second through the consumer's own write path
(`notify_inbox.consumer.persist`, one statement per batch of 500, idempotent), beside
PostgreSQL COPY of the same rows into the same table, in the same database and run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
from sqlalchemy import create_engine

from bench.common import Figure, measure
from notify_common.db.engine import normalize_url
from notify_common.db.migrate import upgrade
from notify_common.testing import infra
from notify_inbox.consumer import persist
from notify_schemas.models import NotificationCreated, NotificationMetadata

ROWS = 50_000
BATCH = 500
COLUMNS = (
    "notification_id",
    "user_id",
    "type",
    "title",
    "body",
    "action_url",
    "metadata",
    "priority",
    "critical",
    "channels",
    "created_at",
)


def _events() -> list[NotificationCreated]:
    now = datetime.now(UTC)
    meta = NotificationMetadata(
        message_id="m",
        server_id="big",
        channel_id="general",
        sender_id="user-0",
        sender_name="User 0",
    )
    return [
        NotificationCreated(
            notification_id=uuid.uuid4(),
            user_id=f"user-{i % 10_000}",
            type="NEW_MESSAGE",
            title="New message in big #general",
            body="User 0: " + "A message long enough to look like chat. " * 3,
            action_url="/servers/big/channels/general",
            metadata=meta,
            priority="normal",
            channels=["in_app", "push", "email"],
            created_at=now,
        )
        for i in range(ROWS)
    ]


def run(*, postgres: infra.Postgres, runs: int, **_: object) -> list[Figure]:
    url = postgres.create_database(f"bench_{uuid.uuid4().hex[:6]}")
    upgrade(url)
    engine = create_engine(normalize_url(url))
    libpq = url.replace("postgresql+psycopg://", "postgresql://")

    def truncate() -> None:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute("TRUNCATE notifications")

    ours = Figure("inbox: notifications persisted/s (batches of 500)", "rows/s")
    copy = Figure("limit: PostgreSQL COPY of the same rows, same table", "rows/s")
    for r in range(runs + 1):
        events = _events()

        def via_persist(evs: list[NotificationCreated] = events) -> None:
            for i in range(0, ROWS, BATCH):
                persist(engine, evs[i : i + BATCH])

        def via_copy(evs: list[NotificationCreated] = events) -> None:
            with (
                psycopg.connect(libpq) as conn,
                conn.cursor() as cur,
                cur.copy(f"COPY notifications ({', '.join(COLUMNS)}) FROM STDIN") as cp,
            ):
                for e in evs:
                    cp.write_row(
                        (
                            e.notification_id,
                            e.user_id,
                            e.type,
                            e.title,
                            e.body,
                            e.action_url,
                            e.metadata.model_dump_json(),
                            e.priority,
                            e.critical,
                            e.channels,
                            e.created_at,
                        )
                    )

        truncate()
        rate_ours = measure(ROWS, via_persist)
        truncate()
        rate_copy = measure(ROWS, via_copy)
        if r:  # the first round warms caches and is discarded
            ours.runs.append(rate_ours)
            copy.runs.append(rate_copy)
    engine.dispose()
    ratio = copy.median / ours.median
    ours.note = f"COPY is {ratio:.2f}x faster (goal: within 2x)"
    return [ours, copy]
