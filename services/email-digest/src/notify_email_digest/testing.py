"""Helpers for email-digest's tests: builders of users and notifications as upstream and
the fanout publish them, a Kafka helper bound to a test's topics, read-only database
queries, the run-digest process, and a local webhook receiver.

Plain functions and classes, so test modules can import them (pytest imports test modules
with --import-mode=importlib, where conftest.py is not importable); tests/conftest.py wraps
them in fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import Message
from sqlalchemy import Engine, text

from notify_common.kafka.producer import EventProducer
from notify_common.testing.kafka import read_topic
from notify_common.testing.processes import script
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.sink import MailSink, SinkMail
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationCreated, User

FROM = "Notify <notify@example.test>"


def wait_until(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {result!r})")
        time.sleep(0.05)


def next_digest_time(hour: int = 9, *, days: int = 1) -> datetime:
    """The digest hour (UTC) `days` days from now: after anything a test publishes now."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(
        hour=hour, minute=0, second=5, microsecond=0
    )


# --- mail ------------------------------------------------------------------------------------


def mails_to(sink: MailSink, address: str) -> list[SinkMail]:
    return [m for m in sink.snapshot() if address in m.rcpt_tos]


def parts(message: EmailMessage) -> dict[str, str]:
    """The text of each part of a multipart/alternative mail, by content type."""
    assert message.get_content_type() == "multipart/alternative", message.get_content_type()
    out: dict[str, str] = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        out[part.get_content_type()] = str(part.get_content())
    return out


def text_of(mail: SinkMail) -> str:
    return parts(mail.message)["text/plain"]


# --- settings --------------------------------------------------------------------------------


def settings_from(env: dict[str, str], **overrides: Any) -> EmailDigestSettings:
    """Settings from `env` alone (the test process's own NOTIFY_* variables don't leak in)."""
    values: dict[str, Any] = {
        k[len("NOTIFY_") :].lower(): v for k, v in env.items() if k.startswith("NOTIFY_")
    }
    values.update(overrides)
    return EmailDigestSettings.model_validate(values)


# --- what upstream and the fanout publish ------------------------------------------------------


def user(user_id: str, **fields: Any) -> User:
    data: dict[str, Any] = {
        "user_id": user_id,
        "display_name": f"User {user_id}",
        "email": f"{user_id}@mail.example.test",
        "entitled": True,
    }
    data.update(fields)
    return User.model_validate(data)


def notification(
    user_id: str,
    *,
    title: str = "New message in Demo #general",
    body: str = "Demo Bot: hello",
    critical: bool = False,
    type: str = "NEW_MESSAGE",
    server: str = "s-demo",
    channel: str | None = "general",
    created_at: datetime | None = None,
    channels: tuple[str, ...] = ("in_app", "push", "email"),
) -> NotificationCreated:
    return NotificationCreated.model_validate(
        {
            "notification_id": str(uuid.uuid4()),
            "user_id": user_id,
            "type": type,
            "title": title,
            "body": body,
            "action_url": f"/servers/{server}/channels/{channel or 'x'}",
            "metadata": {"server_id": server, "channel_id": channel},
            "priority": "high" if critical else "normal",
            "critical": critical,
            "channels": list(channels),
            "created_at": (created_at or datetime.now(UTC)).isoformat(),
        }
    )


class Kafka:
    """Publishes to, and reads, one test's topics."""

    def __init__(self, settings: EmailDigestSettings) -> None:
        self.settings = settings
        self.producer = EventProducer(settings)

    def close(self) -> None:
        self.producer.close(5)

    def _send(self, topic: str, key: str, event: Any) -> None:
        ce_type = topics.topic(topic).ce_type
        assert ce_type is not None
        value, headers = envelope.encode(event, ce_type=ce_type, source="/tests")
        self.producer.produce(self.settings.topic(topic), key=key, value=value, headers=headers)

    def users(self, *users: User) -> None:
        for u in users:
            self._send(topics.USERS, u.user_id, u)
        self.producer.flush(15)

    def notify(self, *notifications: NotificationCreated) -> None:
        for n in notifications:
            self._send(topics.NOTIFICATIONS, n.user_id, n)
        self.producer.flush(15)

    def read(
        self, topic: str, *, expect: int, timeout: float = 15.0, settle: float = 0.5
    ) -> list[Message]:
        """Every record of one of the test's topics from the beginning (no group join):
        once `expect` arrived, `settle` seconds more to catch extras; or the deadline."""
        return read_topic(
            self.settings.kafka_bootstrap,
            self.settings.topic(topic),
            expect,
            timeout=timeout,
            settle=settle,
        )

    def outcomes(self, *, expect: int, settle: float = 0.5) -> list[dict[str, Any]]:
        """The DeliveryRecorded values published so far (at least `expect`, or the deadline)."""
        return [
            json.loads(m.value() or b"{}")
            for m in self.read(topics.DELIVERIES, expect=expect, settle=settle)
        ]


# --- the database, read like an operator would ---------------------------------------------------


class Db:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params).all()]

    def known_users(self) -> int:
        return int(self.scalar('SELECT count(*) FROM email_recipients WHERE "user" IS NOT NULL'))

    def items(self, state: str) -> int:
        return int(self.scalar("SELECT count(*) FROM email_items WHERE state = :s", s=state))


# --- processes -----------------------------------------------------------------------------------


def run_digest_process(
    env: dict[str, str], now: datetime, *, log: Path, **overrides: str
) -> subprocess.Popen[bytes]:
    """Start `notify-email-digest run-digest --now NOW` (returns at once)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [script("notify-email-digest"), "run-digest", "--now", now.isoformat()],
            env={**os.environ, **env, **overrides, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )


def finish(proc: subprocess.Popen[bytes], *, timeout: float = 60.0) -> dict[str, Any]:
    """Wait for a run-digest process; return the summary it printed."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"run-digest exited with {proc.returncode}: {out!r}"
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return summary


# --- a webhook receiver ------------------------------------------------------------------------


class Webhook:
    """A real local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/quota"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
