"""Fixtures of the push-sender tests: a VAPID key pair, the local push receiver, settings on
the test's database and topics, subscriptions, notifications and a deliveries reader."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, text

from notify_common.db.engine import make_engine
from notify_common.kafka.producer import EventProducer
from notify_common.testing.kafka import read_topic
from notify_common.webpush import generate_vapid_private_key
from notify_push_sender.settings import PushSenderSettings
from notify_push_sender.testing import PushReceiver, Subscriber
from notify_schemas import envelope, topics
from notify_schemas.models import DeliveryRecorded, NotificationCreated

SUBJECT = "mailto:push-tests@example.test"


@pytest.fixture(scope="session")
def vapid_pair() -> tuple[str, str]:
    """(private, public) base64url."""
    return generate_vapid_private_key()


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    with PushReceiver() as r:
        yield r


def fast_settings(vapid_pair: tuple[str, str]) -> dict[str, str]:
    """Environment for a push-sender under test: short timeouts and backoffs so retries,
    leases and holds play out in seconds; plain http to 127.0.0.1 (dev hosts)."""
    private, public = vapid_pair
    return {
        "NOTIFY_VAPID_PRIVATE_KEY": private,
        "NOTIFY_VAPID_PUBLIC_KEY": public,
        "NOTIFY_VAPID_SUBJECT": SUBJECT,
        "NOTIFY_PUSH_DEV_HOSTS": "127.0.0.1",
        "NOTIFY_PUSH_REQUEST_TIMEOUT_S": "1.0",
        "NOTIFY_PUSH_RETRY_BASE_S": "0.2",
        "NOTIFY_PUSH_RETRY_CAP_S": "0.5",
        "NOTIFY_PUSH_MAX_ATTEMPTS": "3",
        "NOTIFY_PUSH_POLL_INTERVAL_S": "0.05",
        "NOTIFY_PUSH_LEASE_S": "4",
        "NOTIFY_PUSH_TTL_BY_TYPE": '{"SYSTEM": 3600}',
    }


@pytest.fixture(scope="session")
def fast_env(vapid_pair: tuple[str, str]) -> dict[str, str]:
    return fast_settings(vapid_pair)


@pytest.fixture
def sender_env(notify_env: dict[str, str], fast_env: dict[str, str]) -> dict[str, str]:
    return {**notify_env, **fast_env}


@pytest.fixture
def settings(sender_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PushSenderSettings:
    for name, value in sender_env.items():
        monkeypatch.setenv(name, value)
    return PushSenderSettings()  # type: ignore[call-arg]


@pytest.fixture
def engine(settings: PushSenderSettings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def _add_subscription(
    engine: Engine, user_id: str, sub: Subscriber, *, application_server_key: str | None = None
) -> uuid.UUID:
    """A subscription row as the inbox stores it (the inbox's API is tested on its side)."""
    sid = uuid.uuid4()
    origin = sub.endpoint.split("/push/")[0]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO push_subscriptions (id, user_id, endpoint, origin, p256dh, auth,"
                " application_server_key) VALUES (:id, :u, :e, :o, :p, :a, :k)"
            ),
            {
                "id": sid,
                "u": user_id,
                "e": sub.endpoint,
                "o": origin,
                "p": sub.p256dh,
                "a": sub.subscription()["keys"]["auth"],
                "k": application_server_key,
            },
        )
    return sid


def _subscription_state(engine: Engine, sid: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM push_subscriptions WHERE id = :id"), {"id": sid}
        ).mappings()
        return dict(row.one())


def make_notification(user_id: str, **overrides: Any) -> NotificationCreated:
    data: dict[str, Any] = {
        "notification_id": str(uuid.uuid4()),
        "user_id": user_id,
        "type": "NEW_MESSAGE",
        "title": "New message in Rustaceans #general",
        "body": "Alice: the build is green",
        "action_url": "/servers/s-42/channels/c-general",
        "metadata": {
            "message_id": f"m-{uuid.uuid4().hex[:8]}",
            "server_id": "s-42",
            "channel_id": "c-general",
            "sender_id": "u-alice",
            "sender_name": "Alice",
            "is_mentioned": False,
        },
        "priority": "normal",
        "channels": ["in_app", "push"],
        "created_at": datetime.now(UTC).isoformat(),
    }
    data.update(overrides)
    return NotificationCreated.model_validate(data)


@pytest.fixture
def publish(settings: PushSenderSettings) -> Iterator[Callable[[list[NotificationCreated]], None]]:
    producer = EventProducer(settings)

    def send(events: list[NotificationCreated]) -> None:
        for event in events:
            value, headers = envelope.encode(
                event, ce_type="io.notify.NotificationCreated", source="/tests"
            )
            producer.produce(
                settings.topic(topics.NOTIFICATIONS),
                key=event.user_id,
                value=value,
                headers=headers,
            )
        producer.flush()

    yield send
    producer.close()


@pytest.fixture
def deliveries(settings: PushSenderSettings) -> Callable[..., list[DeliveryRecorded]]:
    """`deliveries(count, notification_id=None)`: DeliveryRecorded events on the test's topic,
    waiting until `count` (of that notification) are there."""

    def read(
        count: int, *, notification_id: uuid.UUID | None = None, timeout: float = 20.0
    ) -> list[DeliveryRecorded]:
        deadline = time.monotonic() + timeout
        while True:
            messages = read_topic(
                settings.kafka_bootstrap,
                settings.topic(topics.DELIVERIES),
                0,
                timeout=0.1,
                settle=0.3,
            )
            found = [DeliveryRecorded.model_validate(orjson.loads(m.value())) for m in messages]
            if notification_id is not None:
                found = [d for d in found if d.notification_id == notification_id]
            found.sort(key=lambda d: (d.at, d.attempt))
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    return read


def _wait_until(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout}s (last: {result!r})")
        time.sleep(0.05)


@pytest.fixture
def add_subscription(engine: Engine) -> Callable[..., uuid.UUID]:
    """`add_subscription(user_id, subscriber, application_server_key=None)` → its id."""
    return lambda user_id, sub, **kw: _add_subscription(engine, user_id, sub, **kw)


@pytest.fixture
def subscription_state(engine: Engine) -> Callable[[uuid.UUID], dict[str, Any]]:
    return lambda sid: _subscription_state(engine, sid)


@pytest.fixture
def notification() -> Callable[..., NotificationCreated]:
    """`notification(user_id, **overrides)`: a fresh NotificationCreated, created now."""
    return make_notification


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return _wait_until
