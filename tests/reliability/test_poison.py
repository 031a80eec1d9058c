"""A poison record on every input topic of the running consumers: each consumer group
dead-letters it with its reason, and the partition keeps flowing (a valid event written
after the poison, to the same partition, is delivered)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka.partitioner import murmur2
from confluent_kafka import Producer

from notify_common.testing.kafka import read_topic
from notify_schemas import envelope, topics
from notify_schemas.models import MessageCreated
from tests.e2e.conftest import Stack, wait_until
from tests.reliability.conftest import Report

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

STACK_SERVICES = ("ingest", "inbox", "fanout")
SERVER = "poison-srv"
USERS = ["poison-a", "poison-b"]
# Keys chosen so that the poison lands on the partition the valid traffic then uses.
POISON = {
    topics.MESSAGE_CREATED: SERVER,
    topics.ANNOUNCEMENT_REQUESTED: SERVER,
    topics.USERS: "poison-a",
    topics.MEMBERSHIPS: f"{SERVER}/poison-a",
    topics.CHANNEL_PREFERENCES: "poison-a/general",
    topics.USER_PREFERENCES: "poison-a",
    topics.NOTIFICATIONS: "poison-a",
    topics.DELIVERIES: "poison-a",
    topics.FANOUT_RESULTS: "after-poison",
    topics.SUPPRESSIONS: "poison-b",
}
# Who must dead-letter what: (topic, consumer group) for the services this stack runs.
EXPECTED = {
    (topics.MESSAGE_CREATED, "notify-fanout"),
    (topics.ANNOUNCEMENT_REQUESTED, "notify-fanout"),
    (topics.USERS, "notify-fanout"),
    (topics.MEMBERSHIPS, "notify-fanout"),
    (topics.CHANNEL_PREFERENCES, "notify-fanout"),
    (topics.USER_PREFERENCES, "notify-fanout"),
    (topics.NOTIFICATIONS, "notify-inbox"),
    (topics.DELIVERIES, "notify-inbox-status"),
    (topics.FANOUT_RESULTS, "notify-inbox-status"),
    (topics.SUPPRESSIONS, "notify-inbox-status"),
}


def murmur2_partition(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


BAD_VALUES = [b"{not json", b'{"valid_json": "but not the schema"}', b"\xff\xfe invalid utf-8"]


def test_poison_on_every_input_topic_is_dead_lettered_and_the_partition_flows_on(
    stack: Stack, report: Report
):
    prefix = stack.env["NOTIFY_TOPIC_PREFIX"]
    producer = Producer({"bootstrap.servers": stack.env["NOTIFY_KAFKA_BOOTSTRAP"]})
    for i, (topic, key) in enumerate(POISON.items()):
        # Proper CloudEvents headers, so what fails is the body: not JSON, not the schema,
        # not UTF-8.
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", f"poison-{i}".encode()),
            ("ce_source", b"/reliability"),
            ("ce_type", (topics.topic(topic).ce_type or "x").encode()),
        ]
        value = BAD_VALUES[i % len(BAD_VALUES)]
        producer.produce(prefix + topic, key=key.encode(), value=value, headers=headers)
    # And a record with no envelope at all.
    producer.produce(prefix + topics.MESSAGE_CREATED, key=SERVER.encode(), value=b"{}")
    # And a valid message on a partition other than its server's (an upstream producer
    # with the wrong partitioner): the worker there may hold none of the members.
    value, headers = envelope.encode(
        MessageCreated(
            message_id="misrouted",
            server_id=SERVER,
            channel_id="general",
            sender_id="poison-a",
            sender_name="A",
            content="wrong partition",
            created_at=datetime.now(UTC),
        ),
        ce_type=topics.topic(topics.MESSAGE_CREATED).ce_type or "",
        source="/reliability",
    )
    right = murmur2_partition(SERVER, topics.topic(topics.MESSAGE_CREATED).partitions)
    wrong = (right + 1) % topics.topic(topics.MESSAGE_CREATED).partitions
    producer.produce(
        prefix + topics.MESSAGE_CREATED, key=SERVER.encode(), value=value, headers=headers,
        partition=wrong,
    )  # fmt: skip
    assert producer.flush(10) == 0

    # Valid traffic behind the poison, on the same partitions.
    with stack.ingest() as ingest:
        for uid in USERS:
            r = ingest.put(f"/v1/users/{uid}", json={"display_name": uid, "entitled": True})
            assert r.status_code == 202, r.text
            r = ingest.put(f"/v1/servers/{SERVER}/members/{uid}", json={})
            assert r.status_code == 202, r.text
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_table_entries", 'table="members"') == 2,
        timeout=60,
        what="the members behind the poison",
    )
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": "after-poison",
                "server_id": SERVER,
                "channel_id": "general",
                "sender_id": "poison-a",
                "sender_name": "A",
                "content": "still flowing",
            },
        )
        assert r.status_code == 202, r.text

    def feed(uid: str) -> list[str]:
        with stack.user(uid) as c:
            items = c.get("/v1/notifications").json()["items"]
        return [n["metadata"]["message_id"] for n in items]

    wait_until(lambda: feed("poison-b") == ["after-poison"], timeout=60, what="the valid message")

    dlq = read_topic(
        stack.env["NOTIFY_KAFKA_BOOTSTRAP"], prefix + topics.DLQ, len(EXPECTED), settle=2
    )
    found: dict[tuple[str, str], str] = {}
    reasons: list[str] = []
    for m in dlq:
        h = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
        topic = h["dlq_original_topic"].removeprefix(prefix)
        group = h["dlq_consumer_group"].removeprefix(prefix)
        if (topic, group) in found:
            found[(topic, group)] += " + " + h["dlq_reason"]
        else:
            found[(topic, group)] = h["dlq_reason"]
        reasons.append(h["dlq_reason"])
    for pair in sorted(EXPECTED):
        report.record(
            f"poison on {pair[0]} ({pair[1]})",
            sent=1,
            received=1 if pair in found else 0,
            duplicates=0,
            lost=0 if pair in found else 1,
            note=(found.get(pair) or "not dead-lettered")[:80].replace("|", "/"),
        )
    assert set(found) == EXPECTED, f"dead-lettered: {sorted(found)}"
    assert all(reason.strip() for reason in reasons)
    assert len(dlq) == len(POISON) + 2, "one dead letter per poison record, no more"
    assert any("CloudEvents" in r for r in reasons)  # the record without an envelope
    assert any(f"belongs on partition {right}, not {wrong}" in r for r in reasons)
    # The valid message reached the other member exactly once, and the sender nothing.
    assert feed("poison-a") == []
