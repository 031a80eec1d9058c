"""Priority lanes (docs/decisions/0010-priority-lanes.md): a critical notification created
while a large bulk announcement is still being worked off reaches the push service and the
SMTP server before the bulk has drained — it never waits behind the backlog.

All six services run as processes against the real broker and PostgreSQL (fullstack.py).
The bulk audience is written straight to notify.users.v1 (User events, murmur2
partitioner) so that tens of thousands of users exist in seconds, and addressed by user id
(announcements list at most 10 000 users, so the bulk is one announcement per 10 000); a
few of them, and the one recipient of the critical notification, have push subscriptions
and addresses through the ordinary APIs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from notify_common.db.engine import normalize_url
from notify_common.kafka.config import client_config
from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_schemas import envelope, topics
from notify_schemas.models import MAX_ANNOUNCEMENT_USERS, User, notification_id_for
from tests.e2e.conftest import OUTPUT, wait_until
from tests.e2e.fullstack import Full, add_members, email_of, full_stack

pytestmark = pytest.mark.e2e

LOG_DIR = OUTPUT / "e2e" / "test_priority_lanes"
# As large as the suite's time budget allows on a 2-core machine; the 100 000-recipient
# version is `make bench` (bench/lanes.py).
BULK_USERS = 20_000
SUBSCRIBED_BULK_USERS = 3


@pytest.fixture(scope="module")
def full(broker, postgres_server) -> Iterator[Full]:
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    with full_stack(broker, postgres_server, LOG_DIR) as f:
        yield f


def settings_of(full: Full) -> CommonSettings:
    env = full.stack.env
    return CommonSettings(
        kafka_bootstrap=env["NOTIFY_KAFKA_BOOTSTRAP"], topic_prefix=env["NOTIFY_TOPIC_PREFIX"]
    )


def write_users(settings: CommonSettings, user_ids: list[str]) -> None:
    """Users (no address, no subscription), produced as an upstream app would."""
    producer = EventProducer(settings)
    users = settings.topic(topics.USERS)
    user_type = topics.topic(topics.USERS).ce_type or ""
    try:
        for uid in user_ids:
            value, headers = envelope.encode(
                User(user_id=uid, display_name=uid, entitled=True),
                ce_type=user_type,
                source="/tests/priority-lanes",
            )
            producer.produce(users, key=uid, value=value, headers=headers)
        producer.flush(120)
    finally:
        producer.close()


class Progress:
    """How far each consumer of the bulk lane got: committed offsets of its group (the sum
    over the partitions, offsets being contiguous) and the inbox's persisted rows."""

    def __init__(self, full: Full) -> None:
        self.settings = settings_of(full)
        self.topic = self.settings.topic(topics.NOTIFICATIONS)
        self._consumers: dict[str, Consumer] = {}
        self._engine = create_engine(normalize_url(full.stack.env["NOTIFY_DATABASE_URL"]))
        probe = Consumer(client_config(self.settings, **{"group.id": "lanes-probe"}))
        try:
            meta = probe.list_topics(self.topic, timeout=10).topics[self.topic]
            self.partitions = [TopicPartition(self.topic, p) for p in meta.partitions]
        finally:
            probe.close()

    def committed(self, group: str) -> int:
        consumer = self._consumers.get(group)
        if consumer is None:
            # Never subscribes: only reads the group's committed offsets.
            consumer = Consumer(
                client_config(self.settings, **{"group.id": self.settings.group(group)})
            )
            self._consumers[group] = consumer
        offsets = consumer.committed(self.partitions, timeout=10)
        return sum(max(0, tp.offset) for tp in offsets)

    def feed_rows(self, announcement_ids: list[str]) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM notifications"
                        " WHERE metadata->>'announcement_id' = ANY(:a)"
                    ),
                    {"a": announcement_ids},
                ).scalar_one()
            )

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._engine.dispose()


@dataclass
class Snapshot:
    after_s: float
    push_sender_bulk: int
    email_digest_bulk: int
    inbox_bulk_rows: int


def snapshot(progress: Progress, started: float, bulk_ids: list[str]) -> Snapshot:
    return Snapshot(
        after_s=time.monotonic() - started,
        push_sender_bulk=progress.committed("notify-push-sender"),
        email_digest_bulk=progress.committed("notify-email-digest"),
        inbox_bulk_rows=progress.feed_rows(bulk_ids),
    )


def test_a_critical_notification_overtakes_a_bulk_announcement_backlog(full: Full):
    stack = full.stack
    tag = f"lanes{uuid.uuid4().hex[:6]}"
    vip = f"{tag}-vip"

    # The audience: a few subscribed users through the APIs, the crowd straight to Kafka.
    users_before = stack.metric("fanout", "notify_fanout_table_entries", 'table="users"')
    subscribed = add_members(full, tag, [f"{tag}-s{i}" for i in range(SUBSCRIBED_BULK_USERS)])
    [vip_sub] = add_members(full, f"{tag}-other", [vip]).values()
    crowd = [f"{tag}-b{i:06d}" for i in range(BULK_USERS - SUBSCRIBED_BULK_USERS)]
    write_users(settings_of(full), crowd)
    audience = [*subscribed, *crowd]
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="users"')
            >= users_before + len(audience) + 1
        ),
        timeout=60,
        what="the bulk audience in the fanout's users",
    )

    progress = Progress(full)
    try:
        chunks = [
            audience[i : i + MAX_ANNOUNCEMENT_USERS]
            for i in range(0, len(audience), MAX_ANNOUNCEMENT_USERS)
        ]
        bulk_ids = [f"{tag}-bulk{i}" for i in range(len(chunks))]
        critical_id = f"{tag}-critical"
        emitted_before = stack.metric("fanout", "notify_fanout_recipients_total")
        with stack.ingest() as ingest:
            for bulk_id, user_ids in zip(bulk_ids, chunks, strict=True):
                r = ingest.post(
                    "/v1/announcements",
                    json={
                        "announcement_id": bulk_id,
                        "title": "Community update",
                        "body": "Bulk news for everyone.",
                        "user_ids": user_ids,
                    },
                )
                assert r.status_code == 202, r.text
            # The whole bulk is on its lane before the critical notification exists.
            wait_until(
                lambda: (
                    stack.metric("fanout", "notify_fanout_recipients_total")
                    >= emitted_before + len(audience)
                ),
                timeout=30,
                what="the bulk announcement fanned out",
            )
            started = time.monotonic()
            r = ingest.post(
                "/v1/announcements",
                json={
                    "announcement_id": critical_id,
                    "title": "Security notice",
                    "body": "Your password was changed.",
                    "user_ids": [vip],
                    "critical": True,
                },
            )
            assert r.status_code == 202, r.text
        want = str(notification_id_for(critical_id, vip))

        pushed: Snapshot | None = None
        mailed: Snapshot | None = None
        deadline = started + 60
        while (pushed is None or mailed is None) and time.monotonic() < deadline:
            if pushed is None and any(
                p.message is not None and str(p.message["data"]["notification_id"]) == want
                for p in full.receiver.delivered(vip_sub.token)
            ):
                pushed = snapshot(progress, started, bulk_ids)
            if mailed is None and full.sink.to(email_of(vip)):
                mailed = snapshot(progress, started, bulk_ids)
            time.sleep(0.02)
        print(
            f"\npriority lanes, bulk of {len(audience)}: critical push at {pushed}, "
            f"critical mail at {mailed}"
        )
        assert pushed is not None, "the critical push never arrived"
        assert mailed is not None, "the critical mail never arrived"
        # Delivered while the same service's bulk lane still had the backlog in front.
        assert pushed.push_sender_bulk < len(audience), pushed
        assert mailed.email_digest_bulk < len(audience), mailed

        # And the bulk still completes: every feed row, every subscribed user's push, and
        # both senders work off the whole bulk lane.
        wait_until(
            lambda: progress.feed_rows(bulk_ids) >= len(audience),
            timeout=90,
            what="the bulk announcement in the feed",
        )
        wait_until(
            lambda: (
                progress.committed("notify-push-sender") >= len(audience)
                and progress.committed("notify-email-digest") >= len(audience)
            ),
            timeout=90,
            what="the bulk lane drained by push-sender and email-digest",
        )
        drained = snapshot(progress, started, bulk_ids)
        print(f"bulk drained by {drained}")
        bulk_nids = {str(notification_id_for(bulk_ids[0], uid)): uid for uid in subscribed}
        wait_until(
            lambda: all(
                any(
                    p.message is not None and str(p.message["data"]["notification_id"]) == nid
                    for p in full.receiver.delivered(subscribed[uid].token)
                )
                for nid, uid in bulk_nids.items()
            ),
            timeout=60,
            what="the bulk pushes to the subscribed users",
        )
        # The critical notification was delivered once per channel.
        assert len(full.sink.to(email_of(vip))) == 1
        assert len(full.receiver.delivered(vip_sub.token)) == 1
        assert progress.feed_rows([critical_id]) == 1
    finally:
        progress.close()
