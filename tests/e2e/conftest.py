"""The e2e harness: every service as a real process, on the real broker and PostgreSQL,
driven over HTTP like an upstream app, a user and an operator would."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from notify_common.auth import issue_user_token
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings, UserAuthSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.pytest_plugin import new_database, test_env

SERVICE_TOKEN = "test-service-token"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


class Stack:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, ServiceProcess] = {}
        self.auth = UserAuthSettings(jwt_secret=env["NOTIFY_JWT_SECRET"])

    def start(self, name: str, port: int | None = None) -> ServiceProcess:
        proc = ServiceProcess(
            SERVICES[name], self.env, port or infra.free_port(), self.log_dir / f"{name}.log"
        ).start()
        self.procs[name] = proc
        return proc

    def url(self, name: str) -> str:
        return self.procs[name].url

    def ingest(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url("ingest"),
            timeout=10,
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        )

    def user(self, user_id: str, *, admin: bool = False) -> httpx.Client:
        token = issue_user_token(self.auth, user_id, admin=admin)
        return httpx.Client(
            base_url=self.url("inbox"), timeout=10, headers={"Authorization": f"Bearer {token}"}
        )

    def metric(self, service: str, name: str, labels: str | None = None) -> float:
        """Sum of a metric's samples on a service's /metrics (0 when absent)."""
        text = httpx.get(self.url(service) + "/metrics", timeout=5).text
        total = 0.0
        pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
        for m in pattern.finditer(text):
            if labels is None or (m.group(1) and labels in m.group(1)):
                total += float(m.group(2))
        return total

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.stop()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_stable(read: Callable[[], float], *, quiet: float, timeout: float, what: str) -> float:
    """Wait until `read()` has not changed for `quiet` seconds; return its value."""
    deadline = time.monotonic() + timeout
    last = read()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"{what} still changing after {timeout}s")


@contextlib.contextmanager
def open_stack(
    broker: infra.Broker,
    database_url: str,
    *,
    log_dir: Path,
    services: tuple[str, ...] = ("ingest", "inbox", "fanout"),
    env_extra: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Every named service as a process on a fresh topic namespace of `broker` and on the
    (migrated) database at `database_url`; all stopped on exit."""
    prefix = f"e{uuid.uuid4().hex[:8]}."
    ensure_topics(CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix))
    env = test_env(broker=broker, database_url=database_url, topic_prefix=prefix)
    env["NOTIFY_SERVICE_TOKENS"] = f"upstream:{SERVICE_TOKEN}"
    env.update(env_extra or {})
    ports = {service: infra.free_port() for service in services}
    if "realtime" in services:
        # The inbox serves the page that streams from realtime: each must know the other.
        env["NOTIFY_REALTIME_PUBLIC_URL"] = f"http://127.0.0.1:{ports['realtime']}"
        env["NOTIFY_REALTIME_CORS_ORIGINS"] = f"http://127.0.0.1:{ports['inbox']}"
        env["NOTIFY_DEV_LOGIN"] = "true"
    s = Stack(env, log_dir)
    try:
        for service in services:
            s.start(service, ports[service])
        for p in s.procs.values():
            p.wait_ready(timeout=120)
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="module")
def stack(request, broker, postgres_server) -> Iterator[Stack]:
    """The module's stack: STACK_SERVICES (default ingest, inbox, fanout) with STACK_ENV
    added to the environment, on a fresh database."""
    name, db_url = new_database(postgres_server)
    try:
        with open_stack(
            broker,
            db_url,
            log_dir=OUTPUT / "e2e" / request.module.__name__.rsplit(".", 1)[-1],
            services=getattr(request.module, "STACK_SERVICES", ("ingest", "inbox", "fanout")),
            env_extra=getattr(request.module, "STACK_ENV", {}),
        ) as s:
            yield s
    finally:
        postgres_server.drop_database(name)
