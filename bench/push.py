"""push-sender throughput: one process delivering to the local push service, beside the
encryption floor measured in the same run.

A run publishes PUSHES notifications (one per user, every user with one subscription on the
local receiver) to notify.notifications.v1 and measures from the moment they are confirmed
on the topic until the receiver has answered 201 to all of them: consume, queue (the
idempotency record), claim, encrypt, sign (cached), HTTP, record and report, end to end.
The receiver runs in this process and does not decrypt (that is the tests' job).

The floor is the same number of aes128gcm encryptions with fresh ECDH keys and nothing else
(push-sender's own `crypto.encrypt`, one core); http_ece's and pywebpush's encoders are
printed for reference.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import http_ece
import orjson
from confluent_kafka import Producer
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, text

from bench.common import Figure, measure
from notify_common.db.engine import normalize_url
from notify_common.db.migrate import upgrade
from notify_common.kafka.config import producer_config
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.pytest_plugin import test_env
from notify_common.webpush import generate_vapid_private_key
from notify_push_sender import crypto
from notify_push_sender.testing import PushReceiver
from notify_schemas import envelope, topics

PUSHES = 5_000


def _notification(uid: str, now: datetime) -> bytes:
    return orjson.dumps(
        {
            "notification_id": str(uuid.uuid4()),
            "user_id": uid,
            "type": "NEW_MESSAGE",
            "title": "New message in big #general",
            "body": "User 0: " + "A message long enough to look like chat. " * 3,
            "action_url": "/servers/big/channels/general",
            "metadata": {
                "message_id": "m",
                "server_id": "big",
                "channel_id": "general",
                "sender_id": "user-0",
                "sender_name": "User 0",
                "is_mentioned": False,
            },
            "priority": "normal",
            "critical": False,
            "channels": ["in_app", "push"],
            "created_at": now.isoformat(),
        }
    )


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def run(
    *, broker: infra.Broker, postgres: infra.Postgres, work: Path, runs: int, **_: object
) -> list[Figure]:
    prefix = f"b{uuid.uuid4().hex[:6]}."
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
    ensure_topics(settings)
    database = f"bench_push_{uuid.uuid4().hex[:6]}"
    db_url = postgres.create_database(database)
    upgrade(db_url)
    private, public = generate_vapid_private_key()

    receiver = PushReceiver(verify=False).start()
    users = [f"user-{i}" for i in range(PUSHES)]
    engine = create_engine(normalize_url(db_url))
    subscriptions = [receiver.subscribe(f"b{i}") for i in range(PUSHES)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO push_subscriptions (id, user_id, endpoint, origin, p256dh, auth)"
                " SELECT gen_random_uuid(), u, e, :origin, p, a"
                " FROM unnest(CAST(:u AS text[]), CAST(:e AS text[]), CAST(:p AS text[]),"
                " CAST(:a AS text[])) AS t(u, e, p, a)"
            ),
            {
                "origin": receiver.origin,
                "u": users,
                "e": [s.endpoint for s in subscriptions],
                "p": [s.p256dh for s in subscriptions],
                "a": [s.subscription()["keys"]["auth"] for s in subscriptions],
            },
        )
    engine.dispose()

    env = test_env(broker=broker, database_url=db_url, topic_prefix=prefix)
    env.update(
        {
            "NOTIFY_LOG_LEVEL": "WARNING",
            "NOTIFY_VAPID_PRIVATE_KEY": private,
            "NOTIFY_VAPID_PUBLIC_KEY": public,
            "NOTIFY_VAPID_SUBJECT": "mailto:bench@example.com",
            "NOTIFY_PUSH_DEV_HOSTS": "127.0.0.1",
        }
    )
    proc = ServiceProcess(
        SERVICES["push-sender"], env, infra.free_port(), work / "push-sender.log"
    ).start()
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    target = settings.topic(topics.NOTIFICATIONS)
    headers = envelope.ce_headers(ce_type="io.notify.NotificationCreated", source="/bench")
    sender = Figure(f"push-sender: pushes/s, 1 process ({PUSHES:,} per run)", "pushes/s")
    try:
        proc.wait_ready(timeout=120)
        for r in range(runs + 1):  # the first run warms up (connections, caches): discarded
            now = datetime.now(UTC)
            values = [_notification(uid, now) for uid in users]
            before = receiver.count
            started = time.perf_counter()
            for uid, value in zip(users, values, strict=True):
                producer.produce(target, value, uid, headers=headers)
            producer.flush(60)
            _wait(lambda b=before: receiver.count >= b + PUSHES, timeout=600, what="push run")
            if r:
                sender.runs.append(PUSHES / (time.perf_counter() - started))
    finally:
        proc.stop()
        receiver.stop()
        postgres.drop_database(database)

    # The floor: the same number of encryptions, fresh ECDH key each, nothing else.
    sub = subscriptions[0]
    keys = sub.subscription()["keys"]
    payload = orjson.dumps(
        {
            "title": "New message in big #general",
            "body": "User 0: " + "A message long enough to look like chat. " * 3,
            "icon": "/app/push/icon-192.png",
            "badge": "/app/push/badge-72.png",
            "data": {"url": "/servers/big/channels/general", "notification_id": str(uuid.uuid4())},
            "tag": "channel:big/general",
            "renotify": True,
        }
    )
    floor = Figure("floor: aes128gcm encryptions, fresh ECDH key each (1 core)", "encrypt/s")
    ece = Figure("reference: http_ece.encrypt, fresh ECDH key each", "encrypt/s")
    pywebpush = Figure("reference: pywebpush WebPusher.encode", "encrypt/s")
    ua_key = sub.private_key.public_key()
    from pywebpush import WebPusher

    pusher = WebPusher(sub.subscription())
    for _ in range(runs):
        floor.runs.append(
            measure(
                PUSHES,
                lambda: [
                    crypto.encrypt(payload, p256dh=keys["p256dh"], auth=keys["auth"])
                    for _ in range(PUSHES)
                ],
            )
        )
        ece.runs.append(
            measure(
                PUSHES,
                lambda: [
                    http_ece.encrypt(
                        payload,
                        private_key=ec.generate_private_key(ec.SECP256R1()),
                        dh=ua_key,
                        auth_secret=sub.auth,
                        version="aes128gcm",
                    )
                    for _ in range(PUSHES)
                ],
            )
        )
        pywebpush.runs.append(
            measure(PUSHES, lambda: [pusher.encode(payload) for _ in range(PUSHES)])
        )
    ratio = floor.median / sender.median if sender.median else 0
    sender.note = (
        f"{ratio:.1f}x below the encryption floor measured in the same run (goal: within 2x); "
        "end to end through Kafka, PostgreSQL (queue + idempotency record) and HTTP/1.1 to a "
        "receiver in the benchmark process, all on the same 2 cores"
    )
    return [sender, floor, ece, pywebpush]
