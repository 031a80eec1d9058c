"""The push service answers 500s and 429s with Retry-After for a minute: push-sender keeps
retrying with its default policy (about four minutes of backoff), every push arrives once
after the service recovers, and nothing is dead-lettered."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from notify_common.testing import infra
from notify_common.testing.kafka import read_topic
from notify_push_sender.testing import Reply
from notify_schemas import topics
from tests.e2e.conftest import OUTPUT, wait_until
from tests.e2e.fullstack import Full, add_members, full_stack
from tests.reliability.conftest import Report

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.long]

SERVER = "po-srv"
SENDER = "po-sender"
USERS = [f"po-{i}" for i in range(6)]
MESSAGES = 4
OUTAGE_S = 60


@pytest.fixture(scope="module")
def full(broker: infra.Broker, postgres_server: infra.Postgres) -> Iterator[Full]:
    with full_stack(broker, postgres_server, OUTPUT / "reliability" / "push_outage") as f:
        yield f


def test_push_service_failing_for_a_minute_costs_no_push(full: Full, report: Report):
    stack = full.stack
    subs = add_members(full, SERVER, [SENDER, *USERS])
    full.receiver.fail_for(
        OUTAGE_S, [Reply(500), Reply(429, retry_after="7"), Reply(503), Reply(429, retry_after="3")]
    )
    with stack.ingest() as ingest:
        for i in range(MESSAGES):
            r = ingest.post(
                "/v1/messages",
                json={
                    "message_id": f"po-{i}",
                    "server_id": SERVER,
                    "channel_id": "c",
                    "sender_id": SENDER,
                    "sender_name": "S",
                    "content": f"#{i}",
                },
            )
            assert r.status_code == 202, r.text
    wait_until(
        lambda: sum(1 for r in full.receiver.requests if r.status >= 500) >= len(USERS),
        timeout=60,
        what="the first refused pushes",
    )
    while full.receiver.failing:
        time.sleep(1)
        # No push is delivered while the service fails.
        assert all(not full.receiver.delivered(subs[u].token) for u in USERS)

    def delivered() -> dict[str, list[str]]:
        return {
            u: [
                (r.message or {}).get("data", {}).get("notification_id", "?")
                for r in full.receiver.delivered(subs[u].token)
            ]
            for u in USERS
        }

    try:
        wait_until(
            lambda: all(len(set(v)) >= MESSAGES for v in delivered().values()),
            timeout=240,
            what="every push after the outage",
        )
    finally:
        got = delivered()
        received = sum(len(set(v)) for v in got.values())
        duplicates = sum(sum(n - 1 for n in Counter(v).values()) for v in got.values())
        refused = sum(1 for r in full.receiver.requests if r.status >= 400)
        report.record(
            "push",
            sent=MESSAGES * len(USERS),
            received=received,
            duplicates=duplicates,
            lost=MESSAGES * len(USERS) - received,
            note=f"push service failing {OUTAGE_S} s (500/503/429); {refused} refused attempts",
        )
    assert duplicates == 0
    dead = [
        m
        for m in read_topic(
            stack.env["NOTIFY_KAFKA_BOOTSTRAP"],
            stack.env["NOTIFY_TOPIC_PREFIX"] + topics.DLQ,
            0,
            timeout=2,
        )
        if b"push-sender" in dict(m.headers() or []).get("dlq_consumer_group", b"")
    ]
    assert dead == [], "a minute of failures must not exhaust the retries"
