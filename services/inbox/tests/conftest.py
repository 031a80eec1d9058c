"""Fixtures of the inbox tests: settings, an engine and an API client on the per-test
database, notification factories and a reader for the test's topics."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Message
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from notify_common.auth import issue_user_token
from notify_common.db.engine import make_engine
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import Backoff, ConsumerRunner
from notify_common.testing import kafka as kafka_reader
from notify_inbox.app import build_app
from notify_inbox.consumer import build_runner
from notify_inbox.settings import InboxSettings
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationCreated
from notify_schemas.topics import contract_dir

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"

EXAMPLE = json.loads(
    (contract_dir() / "examples" / topics.NOTIFICATIONS / "1" / "new_message.json").read_text()
)


def _wait_until(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout}s (last: {result!r})")
        time.sleep(0.05)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """`wait_until(check, timeout=…, what=…)`: poll instead of sleeping a fixed time."""
    return _wait_until


@pytest.fixture
def db_settings(database_url: str) -> InboxSettings:
    """Settings for the API alone: no broker needed, consumer and relay off."""
    return InboxSettings(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        inbox_consumer_enabled=False,
        inbox_relay_enabled=False,
    )


@pytest.fixture
def settings(notify_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> InboxSettings:
    """Settings from the environment of this test's database and topic namespace."""
    for name, value in notify_env.items():
        monkeypatch.setenv(name, value)
    return InboxSettings()  # type: ignore[call-arg]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    settings = InboxSettings(database_url=database_url, jwt_secret=JWT_SECRET)
    eng = make_engine(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def token(db_settings: InboxSettings) -> Callable[..., str]:
    def make(user_id: str, **kwargs: Any) -> str:
        return issue_user_token(db_settings, user_id, **kwargs)

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    """Request headers authenticating as the user."""
    return lambda user_id: {"Authorization": f"Bearer {token(user_id)}"}


@pytest.fixture
def api(db_settings: InboxSettings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(build_app(db_settings, engine=engine)) as client:
        yield client


@pytest.fixture
def notification() -> Callable[..., NotificationCreated]:
    """A NotificationCreated shaped like the contract's example, with a fresh id."""

    def make(user_id: str = "u-carol", **overrides: Any) -> NotificationCreated:
        data = copy.deepcopy(EXAMPLE)
        data.update(notification_id=str(uuid.uuid4()), user_id=user_id, **overrides)
        return NotificationCreated.model_validate(data)

    return make


@pytest.fixture
def publish(settings: InboxSettings) -> Iterator[Callable[[list[NotificationCreated]], None]]:
    """Publish NotificationCreated events to the test's notifications topic (confirmed)."""
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
def read_topic(settings: InboxSettings) -> Callable[..., list[Message]]:
    """Every message on a topic of this test's namespace, waiting until there are `count`.

    Reads by assignment from the beginning, not in a group: no join to wait for.
    """

    def read(
        topic: str, count: int, *, timeout: float = 20.0, settle: float = 0.0
    ) -> list[Message]:
        found = kafka_reader.read_topic(
            settings.kafka_bootstrap, settings.topic(topic), count, timeout=timeout, settle=settle
        )
        if len(found) < count:
            pytest.fail(f"{len(found)} of {count} messages on {topic} within {timeout}s")
        return found

    return read


@pytest.fixture
def running_consumer(settings: InboxSettings, engine: Engine) -> Iterator[ConsumerRunner]:
    """The inbox's consumer, running in a thread on the test's topics and database."""
    runner = build_runner(settings, engine)
    runner.backoff = Backoff(base=0.05, cap=0.5)
    thread = threading.Thread(target=runner.run, name="test-consumer")
    thread.start()
    yield runner
    runner.stop()
    thread.join(15)
    assert not thread.is_alive(), "the consumer did not stop"
