"""Fixtures of the email-digest tests: a real SMTP server (aiosmtpd) on loopback, settings
for this test's database and topics, the service in this process, Kafka and database
helpers, and a webhook receiver (the helpers themselves live in notify_email_digest.testing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from notify_common.db.engine import make_engine
from notify_common.testing.infra import free_port
from notify_email_digest.app import build_app
from notify_email_digest.context import Context
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.sink import MailSink
from notify_email_digest.testing import FROM, Db, Kafka, Webhook, settings_from


@pytest.fixture
def sink() -> Iterator[MailSink]:
    """A real SMTP server on loopback that keeps every mail it accepts."""
    with MailSink(port=free_port()) as server:
        yield server


@pytest.fixture
def env(notify_env: dict[str, str], sink: MailSink) -> dict[str, str]:
    """The environment of an email-digest process for this test: fast retries, and no
    scheduler (tests run digests with their own clock)."""
    return {
        **notify_env,
        "NOTIFY_SMTP_URL": sink.url,
        "NOTIFY_EMAIL_FROM": FROM,
        "NOTIFY_EMAIL_UNSUBSCRIBE_URL": "https://notify.example.test/v1/email/unsubscribe",
        "NOTIFY_EMAIL_APP_URL": "https://chat.example.test",
        "NOTIFY_DIGEST_SCHEDULER_ENABLED": "false",
        "NOTIFY_EMAIL_RETRY_BASE_S": "0.2",
        "NOTIFY_EMAIL_RETRY_CAP_S": "1",
        "NOTIFY_EMAIL_POLL_INTERVAL_S": "0.2",
        "NOTIFY_SMTP_TIMEOUT_S": "5",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> EmailDigestSettings:
    return settings_from(env)


@pytest.fixture
def engine(settings: EmailDigestSettings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()


@dataclass
class Service:
    """email-digest running in this process (its threads)."""

    client: TestClient
    settings: EmailDigestSettings
    running: bool = True

    def stop(self) -> None:
        """Drain and stop it (consumers commit, mails in flight finish)."""
        if self.running:
            self.running = False
            self.client.__exit__(None, None, None)

    @property
    def ctx(self) -> Context:
        ctx: Context = self.client.app.state.context  # type: ignore[attr-defined]
        return ctx


@pytest.fixture
def start_service(
    settings: EmailDigestSettings, engine: Engine
) -> Iterator[Callable[..., Service]]:
    """start_service(**setting overrides): the app with its consumers and sender running;
    stopped (drained) at the end of the test."""
    services: list[Service] = []

    def start(**overrides: Any) -> Service:
        s = settings.model_copy(update=overrides) if overrides else settings
        client = TestClient(build_app(s, engine=engine))
        client.__enter__()
        services.append(Service(client=client, settings=s))
        return services[-1]

    yield start
    for service in reversed(services):
        service.stop()


@pytest.fixture
def kafka(settings: EmailDigestSettings) -> Iterator[Kafka]:
    k = Kafka(settings)
    yield k
    k.close()


@pytest.fixture
def db(engine: Engine) -> Db:
    return Db(engine)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()
