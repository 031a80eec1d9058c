"""push-sender's PostgreSQL: subscriptions (read, health updates) and the push_deliveries
queue, which is also the idempotency record of every push.

Every function runs one transaction and commits before it returns. The hot paths take and
return whole batches (one statement per batch, arrays through unnest) so the database
costs a few statements per hundred pushes, not one per push.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine

# Non-terminal states; every other state is final for that (notification, subscription).
QUEUED = "queued"
INFLIGHT = "inflight"
SENT = "sent"
GONE = "gone"
FAILED = "failed"
DEAD = "dead"
DROPPED = "dropped"

# A subscription is pushed to while active and below this many consecutive failures.
MAX_FAILURES = 5


@dataclass(frozen=True)
class Subscription:
    id: uuid.UUID
    user_id: str
    origin: str
    endpoint: str
    p256dh: str
    auth: str
    application_server_key: str | None


@dataclass
class NewPush:
    """A push to queue for one (notification, subscription)."""

    notification_id: uuid.UUID
    subscription_id: uuid.UUID
    user_id: str
    origin: str
    state: str  # queued, or dropped when it can never be sent in time
    not_before: datetime
    payload: bytes
    ttl_s: int
    urgency: str
    topic: str | None
    expires_at: datetime
    event: bytes
    event_headers: dict[str, str]
    # The decision to report now (held: deferred, dropped: suppressed), or None.
    outcome: str | None = None
    reason: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Queued:
    id: int
    notification_id: uuid.UUID
    subscription_id: uuid.UUID
    state: str


@dataclass(frozen=True)
class Job:
    """A claimed push, with what sending it needs."""

    id: int
    notification_id: uuid.UUID
    user_id: str
    subscription_id: uuid.UUID
    attempt: int
    origin: str
    payload: bytes
    ttl_s: int
    urgency: str
    topic: str | None
    expires_at: datetime
    endpoint: str
    p256dh: str
    auth: str
    application_server_key: str | None
    usable: bool  # the subscription is active and below MAX_FAILURES


@dataclass
class Outcome:
    """The result of one attempt, as recorded."""

    job: Job
    state: str  # the row's next state: queued (retry), or terminal
    outcome: str  # DeliveryRecorded.outcome
    reason: str
    status: int | None = None
    not_before: datetime | None = None  # for a retry
    # What the attempt says about the subscription: ok, gone, failed, retired or None.
    subscription: str | None = None
    # For metrics: 2xx..5xx, timeout, connection, blocked, or none (nothing was sent).
    status_class: str = "none"


@dataclass(frozen=True)
class PendingEvent:
    id: int
    notification_id: uuid.UUID
    user_id: str
    subscription_id: uuid.UUID
    outcome: str
    reason: str | None
    attempt: int
    at: datetime


def _cursor(conn: Any) -> psycopg.Cursor[Any]:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection), "push-sender needs the psycopg 3 driver"
    return raw.cursor()


def active_subscriptions(engine: Engine, user_ids: Sequence[str]) -> list[Subscription]:
    with engine.begin() as conn, _cursor(conn) as cur:
        cur.execute(
            "SELECT id, user_id, origin, endpoint, p256dh, auth, application_server_key"
            " FROM push_subscriptions"
            " WHERE user_id = ANY(%s) AND is_active AND failure_count < %s",
            (list(user_ids), MAX_FAILURES),
        )
        return [Subscription(*row) for row in cur.fetchall()]


# A batch is COPYed (binary) into a session-local staging table, then moved by one
# INSERT ... SELECT that skips what is already recorded: COPY is PostgreSQL's fastest way
# in, and far cheaper in Python than binding a dozen arrays. The staging table lives as
# long as the session and empties itself at commit.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS push_staging (
    ord bigint GENERATED ALWAYS AS IDENTITY,
    notification_id uuid, subscription_id uuid, user_id text, origin text, state text,
    not_before timestamptz, payload bytea, ttl_s int, urgency text, topic text,
    expires_at timestamptz, event bytea, event_headers text, last_outcome text,
    last_reason text, attempts int
) ON COMMIT DELETE ROWS
"""
_COPY = """
COPY push_staging (
    notification_id, subscription_id, user_id, origin, state, not_before, payload, ttl_s,
    urgency, topic, expires_at, event, event_headers, last_outcome, last_reason, attempts
) FROM STDIN (FORMAT BINARY)
"""
_COPY_TYPES = [
    "uuid", "uuid", "text", "text", "text", "timestamptz", "bytea", "int4", "text", "text",
    "timestamptz", "bytea", "text", "text", "text", "int4",
]  # fmt: skip
_MOVE = """
INSERT INTO push_deliveries AS d (
    notification_id, subscription_id, user_id, origin, state, not_before, payload, ttl_s,
    urgency, topic, expires_at, event, event_headers, last_outcome, last_reason, last_at,
    event_pending, attempts
)
SELECT notification_id, subscription_id, user_id, origin, state, not_before, payload, ttl_s,
       urgency, topic, expires_at, event, event_headers::jsonb, last_outcome, last_reason,
       CASE WHEN last_outcome IS NULL THEN NULL ELSE now() END, last_outcome IS NOT NULL,
       attempts
FROM push_staging ORDER BY ord
ON CONFLICT (notification_id, subscription_id) DO UPDATE SET
    state = EXCLUDED.state, not_before = EXCLUDED.not_before, payload = EXCLUDED.payload,
    ttl_s = EXCLUDED.ttl_s, urgency = EXCLUDED.urgency, topic = EXCLUDED.topic,
    expires_at = EXCLUDED.expires_at, event = EXCLUDED.event,
    event_headers = EXCLUDED.event_headers, attempts = EXCLUDED.attempts,
    last_outcome = EXCLUDED.last_outcome, last_reason = EXCLUDED.last_reason,
    last_at = EXCLUDED.last_at, event_pending = EXCLUDED.event_pending,
    last_status = NULL, origin = EXCLUDED.origin
    -- Only a dead-lettered push is revived (a requeued notification); any other existing
    -- row means this notification was already handled for this subscription.
    WHERE d.state = 'dead'
RETURNING d.id, d.notification_id, d.subscription_id, d.state
"""


def queue(engine: Engine, pushes: Sequence[NewPush]) -> list[Queued]:
    """Insert the pushes not recorded yet; return those inserted (or revived).

    A redelivered notification inserts nothing: the unique (notification_id,
    subscription_id) pair is the idempotency key. A push inserted as inflight is claimed
    by this process already (its not_before is the lease)."""
    if not pushes:
        return []
    with engine.begin() as conn, _cursor(conn) as cur:
        cur.execute(_STAGING)
        with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for p in pushes:
                copy.write_row(
                    (
                        p.notification_id,
                        p.subscription_id,
                        p.user_id,
                        p.origin,
                        p.state,
                        p.not_before,
                        p.payload,
                        p.ttl_s,
                        p.urgency,
                        p.topic,
                        p.expires_at,
                        p.event,
                        orjson.dumps(p.event_headers).decode(),
                        p.outcome,
                        p.reason,
                        p.attempts,
                    )
                )
        cur.execute(_MOVE)
        return [Queued(*row) for row in cur.fetchall()]


# One pass per lane, priority first: urgency 'high' is the priority lane (critical, mentions,
# high priority; message.urgency), found through its own partial index; the second pass takes
# the rest. Ordered by not_before alone, a bulk backlog queued earlier would be claimed first
# (docs/decisions/0010-priority-lanes.md).
_LANE_HIGH = "AND urgency = 'high'"
_LANE_REST = "AND urgency <> 'high'"

_CLAIM = """
WITH due AS (
    SELECT id FROM push_deliveries
    WHERE state IN ('queued', 'inflight') AND not_before <= now()
      AND origin <> ALL(%(busy)s::text[]) {lane}
    ORDER BY not_before
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE push_deliveries d
SET state = 'inflight', attempts = d.attempts + 1,
    not_before = now() + make_interval(secs => %(lease)s)
FROM due, push_subscriptions s
WHERE d.id = due.id AND s.id = d.subscription_id
RETURNING d.id, d.notification_id, d.user_id, d.subscription_id, d.attempts, s.origin,
          d.payload, d.ttl_s, d.urgency, d.topic, d.expires_at, s.endpoint, s.p256dh, s.auth,
          s.application_server_key, s.is_active AND s.failure_count < %(max_failures)s
"""


def claim(engine: Engine, *, limit: int, busy: Sequence[str], lease_s: float) -> list[Job]:
    """Take up to `limit` due pushes (skipping origins in `busy`) for `lease_s` seconds.

    Rows another process holds are skipped (SKIP LOCKED); an inflight row whose lease ran
    out (its process died) is due again and is taken over here. Due pushes of the priority
    lane (urgency 'high') are taken before any other, however long the others have waited."""
    jobs: list[Job] = []
    with engine.begin() as conn, _cursor(conn) as cur:
        for lane in (_LANE_HIGH, _LANE_REST):
            if len(jobs) >= limit:
                break
            cur.execute(
                _CLAIM.format(lane=lane),  # one of two constants above, never input
                {
                    "busy": list(busy),
                    "limit": limit - len(jobs),
                    "lease": lease_s,
                    "max_failures": MAX_FAILURES,
                },
            )
            jobs += [Job(*row) for row in cur.fetchall()]
    return jobs


def release(engine: Engine, ids: Sequence[int]) -> None:
    """Give back claimed pushes that were never started (shutdown): due again at once,
    instead of when their lease runs out."""
    if not ids:
        return
    with engine.begin() as conn, _cursor(conn) as cur:
        cur.execute(
            "UPDATE push_deliveries SET state = 'queued', not_before = now(),"
            " attempts = greatest(attempts - 1, 0) WHERE id = ANY(%s) AND state = 'inflight'",
            (list(ids),),
        )


_RECORD = """
UPDATE push_deliveries d
SET state = v.state,
    not_before = COALESCE(v.not_before, d.not_before),
    last_status = v.status, last_outcome = v.outcome, last_reason = v.reason,
    last_at = now(), event_pending = true,
    payload = CASE WHEN v.state IN ('queued', 'dead') THEN d.payload END,
    event = CASE WHEN v.state IN ('queued', 'dead') THEN d.event END,
    event_headers = CASE WHEN v.state IN ('queued', 'dead') THEN d.event_headers END
FROM unnest(
    %s::bigint[], %s::int[], %s::text[], %s::timestamptz[], %s::smallint[], %s::text[],
    %s::text[]
) AS v(id, attempt, state, not_before, status, outcome, reason)
-- Only while the lease is ours: a row taken over after an expired lease has moved on.
WHERE d.id = v.id AND d.attempts = v.attempt AND d.state = 'inflight'
RETURNING d.id, d.last_at, CASE WHEN v.state = 'dead' THEN d.event END,
          CASE WHEN v.state = 'dead' THEN d.event_headers END
"""


@dataclass(frozen=True)
class Recorded:
    at: dict[int, datetime]  # job id -> when recorded (the events' time)
    dead: dict[int, tuple[bytes, dict[str, str]]]  # job id -> the notification to dead-letter


def record(
    engine: Engine, outcomes: Sequence[Outcome], *, published: Sequence[int] = ()
) -> Recorded:
    """Store the outcomes and their effect on the subscriptions, in one transaction.

    Success clears a subscription's failure count and stamps last_active; gone (404/410)
    and retired keys deactivate it; other permanent failures count against it. `published`:
    rows whose events were confirmed since the last call (cleared here, saving a round trip).
    """
    if not outcomes:
        events_published(engine, published)
        return Recorded({}, {})
    ids, attempts, states, not_befores, statuses, kinds, reasons = ([] for _ in range(7))
    ok: list[uuid.UUID] = []
    gone: dict[uuid.UUID, str] = {}
    failed: Counter[uuid.UUID] = Counter()
    for o in outcomes:
        ids.append(o.job.id)
        attempts.append(o.job.attempt)
        states.append(o.state)
        not_befores.append(o.not_before)
        statuses.append(o.status)
        kinds.append(o.outcome)
        reasons.append(o.reason[:500])
        sid = o.job.subscription_id
        if o.subscription == "ok":
            ok.append(sid)
        elif o.subscription in ("gone", "retired"):
            gone[sid] = o.reason[:500]
        elif o.subscription == "failed":
            failed[sid] += 1
    with engine.begin() as conn, _cursor(conn) as cur:
        if published:
            _clear_pending(cur, published)
        cur.execute(_RECORD, (ids, attempts, states, not_befores, statuses, kinds, reasons))
        rows = cur.fetchall()
        if ok:
            # A busy subscription is not rewritten for every push: last_active is kept to
            # the minute, and a reset failure count stays reset.
            cur.execute(
                "UPDATE push_subscriptions SET last_active = now(), failure_count = 0"
                " WHERE id = ANY(%s) AND (failure_count <> 0 OR last_active IS NULL"
                " OR last_active < now() - interval '1 minute')",
                (sorted(set(ok)),),
            )
        if failed:
            keys = sorted(failed)
            cur.execute(
                "UPDATE push_subscriptions s SET failure_count = s.failure_count + c.n,"
                " updated_at = now()"
                " FROM unnest(%s::uuid[], %s::int[]) AS c(id, n) WHERE s.id = c.id",
                (keys, [failed[k] for k in keys]),
            )
        if gone:
            keys = sorted(gone)
            cur.execute(
                "UPDATE push_subscriptions s SET is_active = false, updated_at = now(),"
                " deactivated_reason = c.reason"
                " FROM unnest(%s::uuid[], %s::text[]) AS c(id, reason)"
                " WHERE s.id = c.id AND s.is_active",
                (keys, [gone[k] for k in keys]),
            )
    return Recorded(
        at={row[0]: row[1] for row in rows},
        dead={row[0]: (row[2], row[3] or {}) for row in rows if row[2] is not None},
    )


def _clear_pending(cur: psycopg.Cursor[Any], ids: Sequence[int]) -> None:
    cur.execute(
        "UPDATE push_deliveries SET event_pending = false WHERE id = ANY(%s) AND event_pending",
        (list(ids),),
    )


def events_published(engine: Engine, ids: Sequence[int]) -> None:
    """The DeliveryRecorded events of these rows are confirmed on Kafka."""
    if not ids:
        return
    with engine.begin() as conn, _cursor(conn) as cur:
        _clear_pending(cur, ids)


def pending_events(engine: Engine, *, older_than_s: float, limit: int = 1000) -> list[PendingEvent]:
    """Outcomes recorded whose event was never confirmed (the process died in between)."""
    with engine.begin() as conn, _cursor(conn) as cur:
        cur.execute(
            "SELECT id, notification_id, user_id, subscription_id, last_outcome, last_reason,"
            " greatest(attempts, 1), last_at FROM push_deliveries"
            " WHERE event_pending AND last_at < now() - make_interval(secs => %s)"
            " ORDER BY id LIMIT %s",
            (older_than_s, limit),
        )
        return [PendingEvent(*row) for row in cur.fetchall()]


def backlog(engine: Engine) -> tuple[int, int]:
    """(due now, scheduled later) pushes."""
    with engine.begin() as conn, _cursor(conn) as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE not_before <= now()),"
            " count(*) FILTER (WHERE not_before > now())"
            " FROM push_deliveries WHERE state IN ('queued', 'inflight')"
        )
        row = cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)


def prune(engine: Engine, *, retention_days: int, limit: int = 10_000) -> int:
    """Forget terminal records older than the retention (the idempotency window)."""
    with engine.begin() as conn, _cursor(conn) as cur:
        cur.execute(
            "DELETE FROM push_deliveries WHERE id IN ("
            " SELECT id FROM push_deliveries"
            " WHERE created_at < now() - make_interval(days => %s)"
            " AND state NOT IN ('queued', 'inflight') AND NOT event_pending LIMIT %s)",
            (retention_days, limit),
        )
        return cur.rowcount
