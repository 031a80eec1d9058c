"""email-digest's PostgreSQL: the directory view, the email_items queue, digest claims, the
global quota, alerts, the per-user rate windows and the outbox.

Every function runs one transaction and commits before it returns. Whatever a function
decides about a notification (held, sent, failed…) is written together with its outcome
event (email_outbox), so the record and the event can never disagree after a crash.

Claims are fenced by their attempt number: a sender records an outcome only while the row
is still in the state and attempt it claimed, so a sender that lost its lease (it was too
slow, another replica took over) cannot overwrite the newer attempt's outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, delete, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from notify_common.db.models import (
    EmailItemRow,
    EmailOutboxRow,
    EmailQuotaAlertRow,
    EmailRecipientRow,
)
from notify_email_digest import events
from notify_email_digest.events import OutboxEvent

items_t = cast(Table, EmailItemRow.__table__)
outbox_t = cast(Table, EmailOutboxRow.__table__)
alerts_t = cast(Table, EmailQuotaAlertRow.__table__)
recipients_t = cast(Table, EmailRecipientRow.__table__)

IMMEDIATE = "immediate"
DIGEST = "digest"

# email_items states
QUEUED = "queued"
SENDING = "sending"
PENDING = "pending"
DIGESTING = "digesting"
SENT = "sent"
SUPPRESSED = "suppressed"
FAILED = "failed"
DEAD = "dead"

ALERT_LEVELS = (80, 90, 100)


def utc_day(now: datetime) -> date:
    """The quota's day: it resets at midnight UTC."""
    return now.astimezone(UTC).date()


@dataclass(frozen=True)
class NewItem:
    notification_id: uuid.UUID
    user_id: str
    kind: str
    created_at: datetime
    event: bytes
    event_headers: dict[str, str]


@dataclass(frozen=True)
class Item:
    """A notification being mailed: what rendering and recording need."""

    notification_id: uuid.UUID
    user_id: str
    attempts: int
    quota_day: date | None
    received_at: datetime
    created_at: datetime
    event: bytes
    event_headers: dict[str, str]

    @property
    def correlation_id(self) -> str | None:
        return self.event_headers.get("ce_correlationid")


@dataclass
class Effects:
    """What a transaction did that the caller reports after commit (metrics, wake-ups)."""

    outbox: int = 0
    alerts: list[int] = field(default_factory=list)


def _outbox(conn: Connection, rows: Sequence[OutboxEvent], effects: Effects) -> None:
    if rows:
        conn.execute(pg_insert(outbox_t).values([r.row() for r in rows]))
        effects.outbox += len(rows)


# --- the directory view ------------------------------------------------------------------------


def apply_directory(
    engine: Engine, changes: Sequence[tuple[str, str, dict[str, Any] | None]]
) -> None:
    """Apply (column "user"|"prefs", user_id, record or None for a tombstone) in order."""
    if not changes:
        return
    # The last change of each (column, user) wins, as it would applied one by one.
    latest: dict[tuple[str, str], dict[str, Any] | None] = {}
    for column, user_id, record in changes:
        latest.pop((column, user_id), None)
        latest[(column, user_id)] = record
    with engine.begin() as conn:
        for column in ("user", "prefs"):
            rows = [
                {"user_id": uid, column: record}
                for (col, uid), record in latest.items()
                if col == column
            ]
            if not rows:
                continue
            stmt = pg_insert(recipients_t).values(rows)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[recipients_t.c.user_id],
                    set_={column: stmt.excluded[column], "updated_at": text("now()")},
                )
            )


def load_recipients(
    engine: Engine, user_ids: Iterable[str]
) -> dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            text('SELECT user_id, "user", prefs FROM email_recipients WHERE user_id = ANY(:ids)'),
            {"ids": ids},
        ).all()
    return {r.user_id: (r.user, r.prefs) for r in rows}


# --- accepting notifications -------------------------------------------------------------------


@dataclass(frozen=True)
class Added:
    immediate: int
    held: int
    duplicates: int
    effects: Effects


def add_items(engine: Engine, settings: Any, items: Sequence[NewItem], *, now: datetime) -> Added:
    """Queue immediate mail and hold digest notifications; a notification already recorded
    is left alone (redelivery), unless it failed or died: a notification that comes back
    after that was requeued from the DLQ by an operator, and is mailed again."""
    unique = list({i.notification_id: i for i in items}.values())
    effects = Effects()
    if not unique:
        return Added(0, 0, 0, effects)
    rows = [
        {
            "notification_id": i.notification_id,
            "user_id": i.user_id,
            "kind": i.kind,
            "state": QUEUED if i.kind == IMMEDIATE else PENDING,
            "not_before": now,
            "attempts": 0,
            "created_at": i.created_at,
            "received_at": now,
            "event": i.event,
            "event_headers": i.event_headers,
        }
        for i in unique
    ]
    insert = pg_insert(items_t).values(rows)
    revive: dict[str, Any] = {
        name: insert.excluded[name]
        for name in (
            "kind",
            "state",
            "not_before",
            "attempts",
            "received_at",
            "event",
            "event_headers",
        )
    }
    revive.update(digest_id=None, quota_day=None, last_error=None, sent_at=None)
    revive["updated_at"] = text("now()")
    stmt = insert.on_conflict_do_update(
        index_elements=[items_t.c.notification_id],
        set_=revive,
        where=items_t.c.state.in_([FAILED, DEAD]),
    ).returning(items_t.c.notification_id)
    by_id = {i.notification_id: i for i in unique}
    with engine.begin() as conn:
        fresh = [by_id[nid] for nid in conn.execute(stmt).scalars()]
        held = [i for i in fresh if i.kind == DIGEST]
        _outbox(
            conn,
            [
                events.delivery(
                    settings,
                    notification_id=i.notification_id,
                    user_id=i.user_id,
                    outcome=events.DEFERRED,
                    reason="held for the daily digest",
                    attempt=1,
                    at=now,
                    correlation_id=i.event_headers.get("ce_correlationid"),
                )
                for i in held
            ],
            effects,
        )
    return Added(
        immediate=len(fresh) - len(held),
        held=len(held),
        duplicates=len(unique) - len(fresh),
        effects=effects,
    )


# --- immediate mail ----------------------------------------------------------------------------

# The fences below (the WHERE of every outcome) are spelled out in each statement; they
# are: immediate mail "notification_id = :id AND state = 'sending' AND attempts = :attempts",
# a digest "id = :id AND state = 'claimed' AND attempts = :attempts".


def _item(row: Any) -> Item:
    return Item(
        notification_id=row.notification_id,
        user_id=row.user_id,
        attempts=row.attempts,
        quota_day=row.quota_day,
        received_at=row.received_at,
        created_at=row.created_at,
        event=row.event or b"",
        event_headers=row.event_headers or {},
    )


def claim_immediate(engine: Engine, *, now: datetime, lease_s: float, limit: int) -> list[Item]:
    """Claim due immediate mail (queued, or sending with an expired lease: its sender died)
    until now + lease; each claim is a new attempt."""
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                """
                UPDATE email_items SET state = 'sending', not_before = :lease_until,
                       attempts = attempts + 1, updated_at = now()
                WHERE notification_id IN (
                    SELECT notification_id FROM email_items
                    WHERE state IN ('queued', 'sending') AND not_before <= :now
                    ORDER BY not_before LIMIT :limit FOR UPDATE SKIP LOCKED)
                RETURNING notification_id, user_id, attempts, quota_day, received_at, created_at,
                          event, event_headers
                """
            ),
            {"now": now, "lease_until": now + timedelta(seconds=lease_s), "limit": limit},
        ).all()
    return [_item(r) for r in rows]


def next_immediate_due(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        due: datetime | None = conn.execute(
            text("SELECT min(not_before) FROM email_items WHERE state IN ('queued', 'sending')")
        ).scalar_one()
    return due


@dataclass(frozen=True)
class Admission:
    """The decision about a claimed immediate mail before it is sent."""

    action: str  # send | fold (over the hourly limit) | lost (another sender took it over)
    effects: Effects
    quota_used: int | None = None


def admit_immediate(
    engine: Engine,
    settings: Any,
    item: Item,
    *,
    now: datetime,
    rate_limit: int,
    quota_limit: int,
) -> Admission:
    """Count a claimed immediate mail against the user's hourly limit and the day's quota
    (both once, on its first attempt): over the hourly limit it is folded into the digest;
    the quota never refuses it (critical mail bypasses the quota but is counted)."""
    effects = Effects()
    params = {"id": item.notification_id, "attempts": item.attempts}
    with engine.begin() as conn:
        # The row stays locked to the end: nobody else can take this claim over meanwhile.
        owned = conn.execute(
            text(
                """SELECT quota_day FROM email_items
                   WHERE notification_id = :id AND state = 'sending' AND attempts = :attempts
                   FOR UPDATE"""
            ),
            params,
        ).one_or_none()
        if owned is None:
            return Admission("lost", effects)
        if owned.quota_day is not None:
            return Admission("send", effects)  # counted on an earlier attempt
        if not _take_rate(conn, user_id=item.user_id, now=now, limit=rate_limit):
            conn.execute(
                text(
                    """UPDATE email_items SET kind = 'digest', state = 'pending', attempts = 0,
                       not_before = :now, updated_at = now() WHERE notification_id = :id"""
                ),
                {**params, "now": now},
            )
            _outbox(
                conn,
                [
                    events.delivery(
                        settings,
                        notification_id=item.notification_id,
                        user_id=item.user_id,
                        outcome=events.DEFERRED,
                        reason=(
                            f"over {rate_limit} immediate emails this hour: "
                            "folded into the daily digest"
                        ),
                        attempt=1,
                        at=now,
                        correlation_id=item.correlation_id,
                    )
                ],
                effects,
            )
            return Admission("fold", effects)
        day = utc_day(now)
        used = _take_quota(conn, day=day, limit=quota_limit, bypass=True, now=now, effects=effects)
        conn.execute(
            text("UPDATE email_items SET quota_day = :day WHERE notification_id = :id"),
            {**params, "day": day},
        )
    return Admission("send", effects, quota_used=used)


def requeue_unknown(engine: Engine, item: Item, *, retry_at: datetime) -> bool:
    """Put an immediate mail back without counting the attempt: its user is not in the
    directory yet (the User record may still be on its way)."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                text(
                    """UPDATE email_items SET state = 'queued', not_before = :at,
                        attempts = attempts - 1, updated_at = now()
                    WHERE notification_id = :id AND state = 'sending'
                      AND attempts = :attempts"""
                ),
                {"id": item.notification_id, "attempts": item.attempts, "at": retry_at},
            ).rowcount
        )


def finish_immediate(
    engine: Engine,
    settings: Any,
    item: Item,
    *,
    outcome: str,
    reason: str | None,
    now: datetime,
    retry_at: datetime | None = None,
) -> Effects:
    """Record a claimed immediate mail's outcome: sent, suppressed, retry (queued again at
    retry_at), failed or dead (both dead-lettered, and their quota unit given back)."""
    effects = Effects()
    params: dict[str, Any] = {
        "id": item.notification_id,
        "attempts": item.attempts,
        "reason": reason,
        "now": now,
    }
    with engine.begin() as conn:
        if outcome == "retry":
            conn.execute(
                text(
                    """UPDATE email_items SET state = 'queued', not_before = :at,
                        last_error = :reason, updated_at = now()
                    WHERE notification_id = :id AND state = 'sending'
                      AND attempts = :attempts"""
                ),
                {**params, "at": retry_at},
            )
            return effects
        state = {
            events.SENT: SENT,
            events.SUPPRESSED: SUPPRESSED,
            FAILED: FAILED,
            DEAD: DEAD,
        }[outcome]
        done = conn.execute(
            text(
                """UPDATE email_items SET state = :state, last_error = :reason,
                    sent_at = CASE WHEN :state = 'sent' THEN CAST(:now AS timestamptz) END,
                    event = NULL, event_headers = NULL, updated_at = now()
                    WHERE notification_id = :id AND state = 'sending'
                      AND attempts = :attempts
                    RETURNING quota_day"""
            ),
            {**params, "state": state},
        ).one_or_none()
        if done is None:
            return effects  # another sender took over this mail; its outcome stands
        quota_day = done.quota_day  # set by admit_immediate after this item was claimed
        reported = events.SENT if state == SENT else events.SUPPRESSED
        rows = []
        if state in (FAILED, DEAD):
            reported = events.FAILED
            rows.append(
                events.dead_letter(
                    settings,
                    user_id=item.user_id,
                    event=item.event,
                    event_headers=item.event_headers,
                    reason=reason or state,
                    attempts=item.attempts,
                )
            )
            if quota_day is not None:
                _refund(conn, day=quota_day, immediate=True)
        rows.insert(
            0,
            events.delivery(
                settings,
                notification_id=item.notification_id,
                user_id=item.user_id,
                outcome=reported,
                reason=reason,
                attempt=item.attempts,
                at=now,
                correlation_id=item.correlation_id,
            ),
        )
        _outbox(conn, rows, effects)
    return effects


# --- quota and alerts ----------------------------------------------------------------------------


def _take_rate(conn: Connection, *, user_id: str, now: datetime, limit: int) -> bool:
    """Atomically count one immediate mail in the user's current clock hour; False when
    the hour already holds `limit` of them."""
    if limit <= 0:
        return False
    window = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    row = conn.execute(
        text(
            """INSERT INTO email_rate_windows (user_id, window_start, sent) VALUES (:u, :w, 1)
               ON CONFLICT (user_id, window_start) DO UPDATE
                 SET sent = email_rate_windows.sent + 1
                 WHERE email_rate_windows.sent < :limit
               RETURNING sent"""
        ),
        {"u": user_id, "w": window, "limit": limit},
    ).one_or_none()
    return row is not None


def _take_quota(
    conn: Connection, *, day: date, limit: int, bypass: bool, now: datetime, effects: Effects
) -> int | None:
    """The atomic check-and-increment of the day's quota: the row lock makes concurrent
    takers (any replica) queue, so `used` never passes `limit` through them. `bypass`
    (critical mail) always takes a unit. Returns the new `used`, or None when refused."""
    conn.execute(
        text(
            """INSERT INTO email_quota_days (day, quota_limit) VALUES (:day, :limit)
               ON CONFLICT (day) DO NOTHING"""
        ),
        {"day": day, "limit": limit},
    )
    if bypass:
        used: int | None = conn.execute(
            text(
                """UPDATE email_quota_days SET used = used + 1, immediate = immediate + 1,
                   quota_limit = :limit, updated_at = now() WHERE day = :day RETURNING used"""
            ),
            {"day": day, "limit": limit},
        ).scalar_one()
    else:
        used = conn.execute(
            text(
                """UPDATE email_quota_days SET used = used + 1, quota_limit = :limit,
                   updated_at = now() WHERE day = :day AND used < :limit RETURNING used"""
            ),
            {"day": day, "limit": limit},
        ).scalar_one_or_none()
        if used is None:
            conn.execute(
                text(
                    """UPDATE email_quota_days SET deferred = deferred + 1, quota_limit = :limit,
                       updated_at = now() WHERE day = :day"""
                ),
                {"day": day, "limit": limit},
            )
            return None
    assert used is not None
    if limit > 0:
        reached = [level for level in ALERT_LEVELS if used * 100 >= level * limit]
        if reached:
            # Once per level and day: the primary key admits one row, whoever gets there.
            effects.alerts += list(
                conn.execute(
                    pg_insert(alerts_t)
                    .values(
                        [
                            {
                                "day": day,
                                "level": level,
                                "used": used,
                                "quota_limit": limit,
                                "not_before": now,
                            }
                            for level in reached
                        ]
                    )
                    .on_conflict_do_nothing()
                    .returning(alerts_t.c.level)
                ).scalars()
            )
    return used


def _refund(conn: Connection, *, day: date, immediate: bool) -> None:
    """Give a unit back: the mail was never accepted, so the provider did not count it."""
    conn.execute(
        text(
            """UPDATE email_quota_days SET used = greatest(used - 1, 0),
               immediate = greatest(immediate - CAST(:imm AS int), 0),
               refunded = refunded + 1, updated_at = now() WHERE day = :day"""
        ),
        {"day": day, "imm": 1 if immediate else 0},
    )


def quota_used(engine: Engine, day: date) -> int:
    with engine.connect() as conn:
        used = conn.execute(
            text("SELECT used FROM email_quota_days WHERE day = :day"), {"day": day}
        ).scalar_one_or_none()
    return int(used or 0)


@dataclass(frozen=True)
class Alert:
    day: date
    level: int
    used: int
    quota_limit: int
    attempts: int


def claim_alerts(
    engine: Engine, *, now: datetime, lease_s: float, max_attempts: int
) -> list[Alert]:
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                """UPDATE email_quota_alerts SET attempts = attempts + 1, not_before = :lease
                   WHERE (day, level) IN (
                       SELECT day, level FROM email_quota_alerts
                       WHERE sent_at IS NULL AND not_before <= :now AND attempts < :max
                       ORDER BY day, level LIMIT 10 FOR UPDATE SKIP LOCKED)
                   RETURNING day, level, used, quota_limit, attempts"""
            ),
            {"now": now, "lease": now + timedelta(seconds=lease_s), "max": max_attempts},
        ).all()
    return [Alert(r.day, r.level, r.used, r.quota_limit, r.attempts) for r in rows]


def finish_alert(
    engine: Engine, alert: Alert, *, now: datetime, error: str | None, retry_at: datetime
) -> None:
    with engine.begin() as conn:
        if error is None:
            conn.execute(
                text(
                    """UPDATE email_quota_alerts SET sent_at = :now, last_error = NULL
                       WHERE day = :day AND level = :level"""
                ),
                {"now": now, "day": alert.day, "level": alert.level},
            )
        else:
            conn.execute(
                text(
                    """UPDATE email_quota_alerts SET not_before = :at, last_error = :error
                       WHERE day = :day AND level = :level"""
                ),
                {"at": retry_at, "error": error[:500], "day": alert.day, "level": alert.level},
            )


# --- the digest ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingUser:
    user_id: str
    oldest: datetime  # the earliest received_at of their pending notifications
    user: dict[str, Any] | None
    prefs: dict[str, Any] | None
    # The latest day whose digest is settled (sent, deferred, failed): that day and earlier
    # need no claim attempt (their notifications wait for the next day).
    settled_day: date | None = None


@dataclass(frozen=True)
class OpenDigest:
    """A claimed digest to resume: its sender died (lease expired) or it awaits a retry."""

    id: int
    user_id: str
    digest_day: date
    user: dict[str, Any] | None
    prefs: dict[str, Any] | None


def digest_candidates(
    engine: Engine, *, now: datetime
) -> tuple[list[PendingUser], list[OpenDigest]]:
    with engine.connect() as conn:
        pending = conn.execute(
            text(
                """SELECT p.user_id, p.oldest, r."user", r.prefs,
                          (SELECT max(d.digest_day) FROM email_digests d
                           WHERE d.user_id = p.user_id
                             AND d.state NOT IN ('claimed', 'retry')) AS settled_day
                   FROM (SELECT user_id, min(received_at) AS oldest FROM email_items
                         WHERE state = 'pending' GROUP BY user_id) p
                   LEFT JOIN email_recipients r ON r.user_id = p.user_id"""
            )
        ).all()
        open_ = conn.execute(
            text(
                """SELECT d.id, d.user_id, d.digest_day, r."user", r.prefs
                   FROM email_digests d LEFT JOIN email_recipients r ON r.user_id = d.user_id
                   WHERE (d.state = 'claimed' AND d.lease_until <= :now)
                      OR (d.state = 'retry' AND d.next_attempt_at <= :now)"""
            ),
            {"now": now},
        ).all()
    return (
        [PendingUser(r.user_id, r.oldest, r.user, r.prefs, r.settled_day) for r in pending],
        [OpenDigest(r.id, r.user_id, r.digest_day, r.user, r.prefs) for r in open_],
    )


def suppress_pending(
    engine: Engine, settings: Any, *, user_id: str, reason: str, now: datetime
) -> tuple[int, Effects]:
    """Report the user's held notifications as not mailed (no address, digest off…)."""
    effects = Effects()
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                """UPDATE email_items SET state = 'suppressed', last_error = :reason,
                   event = NULL, event_headers = NULL, updated_at = now()
                   WHERE user_id = :u AND state = 'pending'
                   RETURNING notification_id, attempts, event_headers"""
            ),
            {"u": user_id, "reason": reason},
        ).all()
        _outbox(
            conn,
            [
                events.delivery(
                    settings,
                    notification_id=r.notification_id,
                    user_id=user_id,
                    outcome=events.SUPPRESSED,
                    reason=reason,
                    attempt=max(1, r.attempts),
                    at=now,
                )
                for r in rows
            ],
            effects,
        )
    return len(rows), effects


@dataclass(frozen=True)
class DigestClaim:
    """The outcome of trying to claim one user's digest of one day."""

    status: str  # claimed | taken (someone else has it) | empty | deferred (no quota)
    effects: Effects
    id: int = 0
    attempts: int = 0
    quota_day: date | None = None
    items: list[Item] = field(default_factory=list)
    quota_used: int | None = None


def claim_digest(
    engine: Engine,
    settings: Any,
    *,
    user_id: str,
    digest_day: date,
    now: datetime,
    lease_s: float,
    quota_limit: int,
    instance: str,
) -> DigestClaim:
    """Claim the user's digest of `digest_day` before anything is sent (exactly one claim
    wins across replicas: the unique (user_id, digest_day) row), take its quota unit, and
    assign it every notification the user has waiting. Resumes a digest whose sender died
    or that awaits a retry. Without quota the digest is recorded as deferred: its
    notifications stay pending and join the next day's digest."""
    effects = Effects()
    with engine.begin() as conn:
        claimed = conn.execute(
            text(
                """INSERT INTO email_digests (user_id, digest_day, state, lease_until, attempts,
                                              claimed_by)
                   VALUES (:u, :day, 'claimed', :lease, 1, :me)
                   ON CONFLICT (user_id, digest_day) DO UPDATE
                     SET state = 'claimed', lease_until = :lease, claimed_by = :me,
                         attempts = email_digests.attempts + 1
                     WHERE (email_digests.state = 'claimed' AND email_digests.lease_until <= :now)
                        OR (email_digests.state = 'retry' AND email_digests.next_attempt_at <= :now)
                   RETURNING id, attempts, quota_day"""
            ),
            {
                "u": user_id,
                "day": digest_day,
                "lease": now + timedelta(seconds=lease_s),
                "me": instance,
                "now": now,
            },
        ).one_or_none()
        if claimed is None:
            return DigestClaim("taken", effects)
        digest_id, attempts, quota_day = claimed
        rows = conn.execute(
            text(
                """SELECT notification_id, user_id, attempts, quota_day, received_at, created_at,
                           event, event_headers FROM email_items
                    WHERE user_id = :u AND (state = 'pending'
                          OR (state = 'digesting' AND digest_id = :id))
                    ORDER BY created_at DESC FOR UPDATE"""
            ),
            {"u": user_id, "id": digest_id},
        ).all()
        if not rows:
            # Users with nothing get nothing (their notifications went another way since).
            conn.execute(text("DELETE FROM email_digests WHERE id = :id"), {"id": digest_id})
            if quota_day is not None:
                _refund(conn, day=quota_day, immediate=False)
            return DigestClaim("empty", effects)
        items = [_item(r) for r in rows]
        used = None
        if quota_day is None:
            quota_day = utc_day(now)
            used = _take_quota(
                conn, day=quota_day, limit=quota_limit, bypass=False, now=now, effects=effects
            )
            if used is None:
                conn.execute(
                    text(
                        """UPDATE email_digests SET state = 'deferred', lease_until = NULL,
                           item_count = :n, last_error = 'daily quota exhausted'
                           WHERE id = :id"""
                    ),
                    {"id": digest_id, "n": len(items)},
                )
                _outbox(
                    conn,
                    [
                        events.delivery(
                            settings,
                            notification_id=i.notification_id,
                            user_id=user_id,
                            outcome=events.DEFERRED,
                            reason="daily quota exhausted: in the next digest",
                            attempt=1,
                            at=now,
                            correlation_id=i.correlation_id,
                        )
                        for i in items
                    ],
                    effects,
                )
                return DigestClaim("deferred", effects, id=digest_id)
            conn.execute(
                text("UPDATE email_digests SET quota_day = :day WHERE id = :id"),
                {"day": quota_day, "id": digest_id},
            )
        conn.execute(
            text(
                """UPDATE email_items SET state = 'digesting', digest_id = :id, updated_at = now()
                   WHERE notification_id = ANY(CAST(:ids AS uuid[]))"""
            ),
            {"id": digest_id, "ids": [str(i.notification_id) for i in items]},
        )
        conn.execute(
            text("UPDATE email_digests SET item_count = :n WHERE id = :id"),
            {"n": len(items), "id": digest_id},
        )
    return DigestClaim(
        "claimed",
        effects,
        id=digest_id,
        attempts=attempts,
        quota_day=quota_day,
        items=items,
        quota_used=used,
    )


def finish_digest(
    engine: Engine,
    settings: Any,
    claim: DigestClaim,
    *,
    user_id: str,
    outcome: str,
    reason: str | None,
    now: datetime,
    message_id: str | None = None,
    retry_at: datetime | None = None,
) -> Effects:
    """Record a claimed digest's outcome: sent (its notifications sent), retry (kept with
    its notifications until retry_at), failed or dead (notifications failed, dead-lettered,
    the quota unit given back)."""
    effects = Effects()
    params: dict[str, Any] = {
        "id": claim.id,
        "attempts": claim.attempts,
        "now": now,
        "reason": reason,
    }
    with engine.begin() as conn:
        if outcome == "retry":
            conn.execute(
                text(
                    """UPDATE email_digests SET state = 'retry', lease_until = NULL,
                        next_attempt_at = :at, last_error = :reason
                    WHERE id = :id AND state = 'claimed' AND attempts = :attempts"""
                ),
                {**params, "at": retry_at},
            )
            return effects
        state = {events.SENT: SENT, FAILED: FAILED, DEAD: DEAD}[outcome]
        done = conn.execute(
            text(
                """UPDATE email_digests SET state = :state, lease_until = NULL,
                    sent_at = CASE WHEN :state = 'sent' THEN CAST(:now AS timestamptz) END,
                    message_id = :mid, last_error = :reason
                    WHERE id = :id AND state = 'claimed' AND attempts = :attempts"""
            ),
            {**params, "state": state, "mid": message_id},
        ).rowcount
        if not done:
            return effects
        rows = conn.execute(
            text(
                """UPDATE email_items SET state = :state, last_error = :reason,
                   sent_at = CASE WHEN :state = 'sent' THEN CAST(:now AS timestamptz) END,
                   event = NULL, event_headers = NULL, updated_at = now()
                   WHERE digest_id = :id AND state = 'digesting'
                   RETURNING notification_id"""
            ),
            {**params, "state": state},
        ).scalars()
        sent_ids = set(rows)
        out: list[OutboxEvent] = []
        for item in claim.items:
            if item.notification_id not in sent_ids:
                continue
            out.append(
                events.delivery(
                    settings,
                    notification_id=item.notification_id,
                    user_id=user_id,
                    outcome=events.SENT if state == SENT else events.FAILED,
                    reason=reason,
                    attempt=claim.attempts,
                    at=now,
                    correlation_id=item.correlation_id,
                )
            )
            if state != SENT:
                out.append(
                    events.dead_letter(
                        settings,
                        user_id=user_id,
                        event=item.event,
                        event_headers=item.event_headers,
                        reason=reason or state,
                        attempts=claim.attempts,
                    )
                )
        if state != SENT and claim.quota_day is not None:
            _refund(conn, day=claim.quota_day, immediate=False)
        _outbox(conn, out, effects)
    return effects


# --- housekeeping -----------------------------------------------------------------------------


def backlog(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """SELECT CASE WHEN state IN ('queued', 'sending') THEN 'queued'
                              ELSE 'pending' END AS s, count(*) AS n
                   FROM email_items WHERE state IN ('queued', 'sending', 'pending', 'digesting')
                   GROUP BY 1"""
            )
        ).all()
    out = {"queued": 0, "pending": 0}
    out.update({r.s: int(r.n) for r in rows})
    return out


def cleanup(engine: Engine, *, now: datetime, retention_days: int) -> int:
    """Forget final records older than the retention (they were the idempotency keys of
    redeliveries that can no longer happen). Quota days and alerts are kept: the audit."""
    before = now - timedelta(days=retention_days)
    with engine.begin() as conn:
        removed = conn.execute(
            delete(items_t).where(
                items_t.c.state.in_([SENT, SUPPRESSED, FAILED, DEAD]),
                items_t.c.updated_at < before,
            )
        ).rowcount
        conn.execute(
            text(
                """DELETE FROM email_digests WHERE created_at < :before
                   AND state NOT IN ('claimed', 'retry')"""
            ),
            {"before": before},
        )
        conn.execute(
            text("DELETE FROM email_rate_windows WHERE window_start < :t"),
            {"t": now - timedelta(hours=2)},
        )
    return int(removed)
