"""Rebalance under load: a second fanout and a second inbox join the consumer groups while
10 000 messages flow, and leave again before the flow ends. The notifications produced are
exactly the expected set: none missing, none twice in any feed."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from sqlalchemy import create_engine, text

from notify_common.db.engine import normalize_url
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_schemas import envelope, topics
from notify_schemas.models import MessageCreated
from tests.e2e.conftest import Stack, wait_until
from tests.reliability.conftest import Report

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

MESSAGES = 10_000
SERVERS = [f"rb-srv-{i}" for i in range(12)]  # spread over the partitions
SENDER = "rb-sender"


def recipient(server: str) -> str:
    return f"rb-user-{server.rsplit('-', 1)[1]}"


def extra(stack: Stack, name: str) -> ServiceProcess:
    return ServiceProcess(
        SERVICES[name], stack.env, infra.free_port(), stack.log_dir / f"{name}-2.log"
    ).start()


def test_replicas_joining_and_leaving_under_load_change_nothing(stack: Stack, report: Report):
    with stack.ingest() as ingest:
        for server in SERVERS:
            for uid in (SENDER, recipient(server)):
                r = ingest.put(f"/v1/users/{uid}", json={"display_name": uid, "entitled": True})
                assert r.status_code == 202, r.text
                assert ingest.put(f"/v1/servers/{server}/members/{uid}", json={}).status_code == 202
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
            == 2 * len(SERVERS)
        ),
        timeout=60,
        what="members in the fanout",
    )

    # The upstream app writes straight to the topic (as the contract allows), at a steady
    # pace, so that the replicas join and leave while it flows.
    produced = 0

    def produce_all() -> None:
        nonlocal produced
        producer = Producer(
            {
                "bootstrap.servers": stack.env["NOTIFY_KAFKA_BOOTSTRAP"],
                "linger.ms": 5,
                # The contract's partitioner (README "Topics"): the Java client's murmur2.
                "partitioner": "murmur2_random",
            }
        )
        topic = stack.env["NOTIFY_TOPIC_PREFIX"] + topics.MESSAGE_CREATED
        ce_type = topics.topic(topics.MESSAGE_CREATED).ce_type or ""
        started = time.monotonic()
        for i in range(MESSAGES):
            server = SERVERS[i % len(SERVERS)]
            event = MessageCreated(
                message_id=f"rb-{i}",
                server_id=server,
                channel_id="c",
                sender_id=SENDER,
                sender_name="S",
                content=f"#{i}",
                created_at=datetime.now(UTC),
            )
            value, headers = envelope.encode(event, ce_type=ce_type, source="/rebalance-test")
            producer.produce(topic, key=server.encode(), value=value, headers=headers)
            produced = i + 1
            producer.poll(0)
            # About 250 messages/s: 40 s of traffic.
            ahead = produced / 250 - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        assert producer.flush(30) == 0

    writer = threading.Thread(target=produce_all, daemon=True)
    writer.start()
    wait_until(lambda: produced >= MESSAGES // 5, timeout=60, what="a fifth of the traffic")
    fanout2, inbox2 = extra(stack, "fanout"), extra(stack, "inbox")
    try:
        fanout2.wait_ready(timeout=120)
        inbox2.wait_ready(timeout=120)
        joined_at = produced
        wait_until(
            lambda: produced >= min(MESSAGES, joined_at + MESSAGES // 5),
            timeout=120,
            what="traffic while both replicas run",
        )
    finally:
        left_at = produced
        assert fanout2.stop() == 0, fanout2.tail()
        assert inbox2.stop() == 0, inbox2.tail()
    writer.join(180)
    assert produced == MESSAGES

    engine = create_engine(normalize_url(stack.env["NOTIFY_DATABASE_URL"]))

    def counts() -> tuple[int, int]:
        with engine.connect() as c:
            row = c.execute(
                text(
                    "SELECT count(*), count(DISTINCT (user_id, metadata->>'message_id')) "
                    "FROM notifications WHERE metadata->>'message_id' LIKE 'rb-%'"
                )
            ).one()
            return int(row[0]), int(row[1])

    try:
        wait_until(lambda: counts()[1] >= MESSAGES, timeout=240, what="every notification")
        time.sleep(2)  # anything extra still on its way shows up now
    finally:
        rows, distinct = counts()
        with engine.connect() as c:
            wrong = c.execute(
                text(
                    "SELECT count(*) FROM notifications WHERE metadata->>'message_id' LIKE 'rb-%' "
                    "AND user_id NOT LIKE 'rb-user-%'"
                )
            ).scalar_one()
        engine.dispose()
        report.record(
            "in_app (feed)",
            sent=MESSAGES,
            received=distinct,
            duplicates=rows - distinct,
            lost=MESSAGES - distinct,
            note=f"fanout+inbox replicas joined after {joined_at}, left after {left_at}",
        )
    assert rows == distinct == MESSAGES
    assert wrong == 0, "only the one member of each server other than the sender is notified"
