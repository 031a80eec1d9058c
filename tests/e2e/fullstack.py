"""The whole pipeline for the operations e2e tests: all six services as processes (the
conftest's Stack), a local push service that decrypts what it receives, and an SMTP sink
that requires a password, so that every channel delivers for real and every secret the
services hold is in play."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings
from notify_common.testing import infra
from notify_common.testing.pytest_plugin import new_database, test_env
from notify_common.webpush import generate_vapid_private_key
from notify_email_digest.sink import MailSink, SinkMail
from notify_email_digest.sink import _Handler as SinkHandler
from notify_push_sender.testing import PushReceiver, Subscriber
from tests.e2e.conftest import OUTPUT, SERVICE_TOKEN, Stack, wait_until

ALL_SERVICES = ("ingest", "inbox", "fanout", "realtime", "push-sender", "email-digest")
SMTP_USER = "notify-smtp"
SMTP_PASSWORD = f"smtp-pw-{uuid.uuid4().hex}"
FROM = "Notify <notify@example.test>"


class PasswordSink(MailSink):
    """The tests' SMTP sink, but it advertises AUTH and accepts only SMTP_PASSWORD (over
    plain TCP on loopback: a test server), so the service must log in with the URL's
    credentials."""

    def start(self) -> PasswordSink:
        def check(_server: Any, _session: Any, _env: Any, _mech: str, auth_data: Any) -> AuthResult:
            login = getattr(auth_data, "login", b"")
            password = getattr(auth_data, "password", b"")
            ok = login == SMTP_USER.encode() and password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok)

        self._controller = Controller(
            SinkHandler(self),
            hostname=self.host,
            port=self.port,
            authenticator=check,
            auth_required=True,
            auth_require_tls=False,
        )
        self._controller.start()
        return self

    def to(self, address: str) -> list[SinkMail]:
        return [m for m in self.snapshot() if address in m.rcpt_tos]


@dataclass
class Full:
    stack: Stack
    receiver: PushReceiver
    sink: PasswordSink
    vapid_private: str

    def secrets(self) -> dict[str, str]:
        """Every secret value the services were given."""
        out = {
            "jwt secret": self.stack.env["NOTIFY_JWT_SECRET"],
            "service token": SERVICE_TOKEN,
            "vapid private key": self.vapid_private,
            "smtp password": SMTP_PASSWORD,
        }
        db_password = _password(self.stack.env["NOTIFY_DATABASE_URL"])
        if db_password:
            out["database password"] = db_password
        return out


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).password


@contextmanager
def full_stack(
    broker: infra.Broker,
    postgres_server: infra.Postgres,
    log_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Full]:
    """Start everything; stop every process this started on the way out."""
    name, db_url = new_database(postgres_server)
    prefix = f"o{uuid.uuid4().hex[:8]}."
    ensure_topics(CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix))
    vapid_private, vapid_public = generate_vapid_private_key()
    receiver = PushReceiver().start()
    sink = PasswordSink(port=infra.free_port()).start()
    env = {
        **test_env(broker=broker, database_url=db_url, topic_prefix=prefix),
        "NOTIFY_SERVICE_TOKENS": f"upstream:{SERVICE_TOKEN}",
        "NOTIFY_VAPID_PRIVATE_KEY": vapid_private,
        "NOTIFY_VAPID_PUBLIC_KEY": vapid_public,
        "NOTIFY_VAPID_SUBJECT": "mailto:ops@example.test",
        "NOTIFY_PUSH_DEV_HOSTS": "127.0.0.1",
        "NOTIFY_PUSH_POLL_INTERVAL_S": "0.1",
        "NOTIFY_SMTP_URL": f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{sink.port}",
        "NOTIFY_EMAIL_FROM": FROM,
        "NOTIFY_DIGEST_SCHEDULER_ENABLED": "false",
        "NOTIFY_EMAIL_POLL_INTERVAL_S": "0.2",
        "NOTIFY_EMAIL_RETRY_BASE_S": "0.2",
        "NOTIFY_EMAIL_RETRY_CAP_S": "1",
        "NOTIFY_SMTP_TIMEOUT_S": "5",
        **(extra_env or {}),
    }
    stack = Stack(env, log_dir)
    try:
        for service in ALL_SERVICES:
            stack.start(service)
        for p in stack.procs.values():
            p.wait_ready(timeout=120)
        yield Full(stack=stack, receiver=receiver, sink=sink, vapid_private=vapid_private)
    finally:
        # In parallel: each drains for a few seconds, and they do not depend on each other.
        with ThreadPoolExecutor(len(ALL_SERVICES)) as pool:
            list(pool.map(lambda proc: proc.stop(), stack.procs.values()))
        receiver.stop()
        sink.stop()
        postgres_server.drop_database(name)


def email_of(user_id: str) -> str:
    return f"{user_id}@example.test"


def add_members(
    full: Full, server: str, users: list[str], *, push: bool = True
) -> dict[str, Subscriber]:
    """Users (entitled, with an address) in `server`, each with one push subscription;
    waits until the fanout knows every one of them."""
    stack = full.stack
    subs: dict[str, Subscriber] = {}
    before = stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
    with stack.ingest() as ingest:
        for uid in users:
            r = ingest.put(
                f"/v1/users/{uid}",
                json={"display_name": uid, "entitled": True, "email": email_of(uid)},
            )
            assert r.status_code == 202, r.text
            r = ingest.put(f"/v1/servers/{server}/members/{uid}", json={"server_name": server})
            assert r.status_code == 202, r.text
    if push:
        for uid in users:
            sub = full.receiver.subscribe(f"{uid}-{uuid.uuid4().hex[:6]}")
            with stack.user(uid) as c:
                r = c.post(
                    "/v1/push/subscriptions", json={**sub.subscription(), "device": {"name": "t"}}
                )
                assert r.status_code == 201, r.text
            subs[uid] = sub
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
            >= before + len(users)
        ),
        timeout=60,
        what="members in the fanout",
    )
    return subs


__all__ = ["ALL_SERVICES", "OUTPUT", "Full", "add_members", "email_of", "full_stack"]
