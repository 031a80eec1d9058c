"""Fanout throughput: one worker, a server of 10 000 members, 100 messages per run.

Measured from the moment the 100 messages are confirmed on the input topic to the moment
the worker's `notify_fanout_recipients_total` has grown by 100 * 9 999 (its output is
confirmed by then: the counter moves only after a batch's flush). The limit beside it is
a plain confluent-kafka loop producing as many records of the same size to the same broker.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Producer

from bench.common import Figure, measure
from notify_common.kafka.config import producer_config
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.pytest_plugin import test_env
from notify_schemas import envelope, models, topics

MEMBERS = 10_000
MESSAGES = 100


def _metric(url: str, name: str, label: str = "") -> float:
    text = httpx.get(url + "/metrics", timeout=60).text
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
    return sum(
        float(m.group(2))
        for m in pattern.finditer(text)
        if not label or (m.group(1) and label in m.group(1))
    )


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def run(*, broker: infra.Broker, work: Path, runs: int, **_: object) -> list[Figure]:
    prefix = f"b{uuid.uuid4().hex[:6]}."
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
    ensure_topics(settings)
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    now = datetime.now(UTC)
    for i in range(MEMBERS):
        uid = f"user-{i}"
        user = models.User(user_id=uid, display_name=f"User {i}", entitled=True)
        value, headers = envelope.encode(user, ce_type="io.notify.User", source="/bench")
        producer.produce(settings.topic(topics.USERS), key=uid, value=value, headers=headers)
        member = models.Membership(server_id="big", user_id=uid)
        value, headers = envelope.encode(member, ce_type="io.notify.Membership", source="/bench")
        producer.produce(
            settings.topic(topics.MEMBERSHIPS), key=f"big/{uid}", value=value, headers=headers
        )
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)

    env = test_env(broker=broker, database_url="unused", topic_prefix=prefix)
    env["NOTIFY_LOG_LEVEL"] = "WARNING"
    proc = ServiceProcess(SERVICES["fanout"], env, infra.free_port(), work / "fanout.log").start()
    try:
        proc.wait_ready(timeout=120)
        _wait(
            lambda: (
                _metric(proc.url, "notify_fanout_table_entries", 'table="members"') >= MEMBERS
                and _metric(proc.url, "notify_fanout_table_entries", 'table="users"') >= MEMBERS
            ),
            timeout=300,
            what="directory loaded",
        )

        def post_batch(tag: str) -> None:
            for m in range(MESSAGES):
                msg = models.MessageCreated(
                    message_id=f"{tag}-{m}",
                    server_id="big",
                    channel_id="general",
                    sender_id="user-0",
                    sender_name="User 0",
                    content="A message long enough to look like chat. " * 3,
                    created_at=now,
                )
                value, headers = envelope.encode(
                    msg, ce_type="io.notify.MessageCreated", source="/bench"
                )
                producer.produce(
                    settings.topic(topics.MESSAGE_CREATED), key="big", value=value, headers=headers
                )
            producer.flush(30)

        per_run = MESSAGES * (MEMBERS - 1)
        fanout = Figure("fanout: recipients/s, 1 worker (10k members x 100 msgs)", "recip/s")
        for r in range(runs + 1):  # the first run warms up and is discarded
            before = _metric(proc.url, "notify_fanout_recipients_total")
            started = time.perf_counter()
            post_batch(f"r{r}-{uuid.uuid4().hex[:4]}")
            _wait(
                lambda b=before: _metric(proc.url, "notify_fanout_recipients_total") >= b + per_run,
                timeout=600,
                what="fanout run",
            )
            rate = per_run / (time.perf_counter() - started)
            if r:
                fanout.runs.append(rate)
    finally:
        proc.stop()

    # The limit: the same number of records of the same size, produced by a bare loop.
    sample = orjson.dumps(
        {
            "notification_id": str(uuid.uuid4()),
            "user_id": "user-1234",
            "type": "NEW_MESSAGE",
            "title": "New message in big #general",
            "body": "User 0: " + "A message long enough to look like chat. " * 3,
            "action_url": "/servers/big/channels/general",
            "metadata": {
                "message_id": "x",
                "server_id": "big",
                "channel_id": "general",
                "sender_id": "user-0",
                "sender_name": "User 0",
                "is_mentioned": False,
            },
            "priority": "normal",
            "critical": False,
            "channels": ["in_app", "push", "email"],
            "created_at": now.isoformat(),
        }
    )
    headers = envelope.ce_headers(ce_type="io.notify.NotificationCreated", source="/bench")
    limit = Figure("limit: plain confluent-kafka produce loop, same records", "records/s")
    target = settings.topic(topics.NOTIFICATIONS)
    for _ in range(runs):

        def loop() -> None:
            for i in range(per_run):
                producer.produce(target, sample, f"user-{i % MEMBERS}", headers=headers)
                if i % 2000 == 0:
                    producer.poll(0)
            producer.flush(120)

        limit.runs.append(measure(per_run, loop))
    return [fanout, limit]
