"""The push queue's claims, leases, releases, republishing and pruning, on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from notify_push_sender import store

pytestmark = pytest.mark.integration


def push(sid: uuid.UUID, origin: str, **kw) -> store.NewPush:
    now = datetime.now(UTC)
    data = {
        "notification_id": uuid.uuid4(),
        "subscription_id": sid,
        "user_id": "u",
        "origin": origin,
        "state": store.QUEUED,
        "not_before": now,
        "payload": b"{}",
        "ttl_s": 60,
        "urgency": "normal",
        "topic": None,
        "expires_at": now + timedelta(minutes=1),
        "event": b"{}",
        "event_headers": {"ce_id": "x"},
    }
    data.update(kw)
    return store.NewPush(**data)


@pytest.fixture
def subs(engine, receiver, add_subscription) -> dict[str, uuid.UUID]:
    return {name: add_subscription("u", receiver.subscribe(name)) for name in ("a", "b")}


def state(engine, row_id: int) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM push_deliveries WHERE id = :i"), {"i": row_id})
            .mappings()
            .one()
        )


def test_claims_skip_busy_origins_and_take_over_expired_leases(engine, subs):
    queued = store.queue(engine, [push(subs["a"], "http://a"), push(subs["b"], "http://b")])
    assert len(queued) == 2
    # The same pair again inserts nothing: the idempotency key.
    again = push(subs["a"], "http://a", notification_id=queued[0].notification_id)
    assert store.queue(engine, [again]) == []

    [job] = store.claim(engine, limit=10, busy=["http://a"], lease_s=0.2)
    assert job.subscription_id == subs["b"] and job.attempt == 1 and job.usable
    assert store.claim(engine, limit=10, busy=["http://a", "http://b"], lease_s=5) == []
    # The lease of b's push runs out (its process died): claimed again, attempt 2.
    with engine.begin() as conn:
        conn.execute(text("UPDATE push_deliveries SET not_before = now() - interval '1 s'"))
    jobs = store.claim(engine, limit=10, busy=[], lease_s=5)
    assert sorted(j.attempt for j in jobs) == [1, 2]
    # An outcome recorded under the expired lease (attempt 1) is ignored.
    stale = store.Outcome(job, store.SENT, "sent", "201", status=201, subscription="ok")
    assert store.record(engine, [stale]).at == {}
    assert state(engine, job.id)["state"] == store.INFLIGHT


def test_release_returns_unstarted_pushes_at_once(engine, subs):
    [q] = store.queue(engine, [push(subs["a"], "http://a")])
    [job] = store.claim(engine, limit=1, busy=[], lease_s=600)
    store.release(engine, [job.id])
    row = state(engine, q.id)
    assert row["state"] == store.QUEUED and row["attempts"] == 0
    assert store.claim(engine, limit=1, busy=[], lease_s=600)[0].attempt == 1


def test_unconfirmed_events_are_found_again_and_old_records_pruned(engine, subs):
    [q] = store.queue(engine, [push(subs["a"], "http://a")])
    [job] = store.claim(engine, limit=1, busy=[], lease_s=60)
    outcome = store.Outcome(job, store.SENT, "sent", "201", status=201, subscription="ok")
    recorded = store.record(engine, [outcome])
    assert set(recorded.at) == {q.id}
    row = state(engine, q.id)
    assert row["event_pending"] and row["payload"] is None and row["event"] is None
    # The process died before the event was confirmed: found by the republisher.
    [pending] = store.pending_events(engine, older_than_s=0)
    assert (pending.outcome, pending.attempt, pending.subscription_id) == ("sent", 1, subs["a"])
    store.events_published(engine, [q.id])
    assert store.pending_events(engine, older_than_s=0) == []
    assert store.prune(engine, retention_days=1) == 0
    with engine.begin() as conn:
        conn.execute(text("UPDATE push_deliveries SET created_at = now() - interval '2 days'"))
    assert store.prune(engine, retention_days=1) == 1


def test_a_dead_lettered_push_is_revived_by_a_requeued_notification(engine, subs):
    first = push(subs["a"], "http://a")
    [q] = store.queue(engine, [first])
    [job] = store.claim(engine, limit=1, busy=[], lease_s=60)
    dead = store.Outcome(job, store.DEAD, "failed", "503 x3", status=503)
    recorded = store.record(engine, [dead])
    assert recorded.dead[q.id][0] == b"{}"  # what goes to the DLQ
    [revived] = store.queue(engine, [first])
    assert revived.id == q.id and state(engine, q.id)["state"] == store.QUEUED


def test_priority_pushes_are_claimed_before_an_older_bulk_backlog(engine, subs):
    """The priority lane (docs/decisions/0010-priority-lanes.md): a high-urgency push queued
    after a backlog of low-urgency ones is in the very next claim."""
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    bulk = [
        push(subs["a"], "http://a", urgency="low", not_before=earlier + timedelta(seconds=i))
        for i in range(20)
    ]
    store.queue(engine, bulk)
    [critical] = store.queue(engine, [push(subs["b"], "http://b", urgency="high")])
    jobs = store.claim(engine, limit=5, busy=[], lease_s=60)
    assert jobs[0].id == critical.id
    assert len(jobs) == 5 and {j.urgency for j in jobs[1:]} == {"low"}
    # The rest of the backlog still goes, oldest first.
    rest = store.claim(engine, limit=100, busy=[], lease_s=60)
    assert len(rest) == 16 and [j.id for j in rest] == sorted(j.id for j in rest)
