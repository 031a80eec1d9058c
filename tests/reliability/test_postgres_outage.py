"""PostgreSQL stopped for 30 s while messages flow, then started again: the services that
need it say so on /readyz, keep their input, and once it is back every notification is in
every feed exactly once.

The test runs its own PostgreSQL (the session's shared one serves other tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from notify_common.db.migrate import upgrade
from notify_common.testing import infra
from tests.e2e.conftest import OUTPUT, Stack, open_stack, wait_until
from tests.reliability.conftest import Report, feed_ids, join, post_message, record_feeds

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

SERVER = "pg-out"
USERS = [f"pg-user-{i}" for i in range(8)]
SENDER = "pg-sender"
MESSAGES = 60
OUTAGE_S = 30


class RestartablePostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = infra.free_port()
        self.server: infra.Postgres | None = None

    def start(self) -> infra.Postgres:
        self.server = infra.embedded_postgres(self.data_dir, port=self.port, fast=True)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres(tmp_path_factory.mktemp("pg-outage") / "data")
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def stack(broker: infra.Broker, own_postgres: RestartablePostgres) -> Iterator[Stack]:
    assert own_postgres.server is not None
    url = own_postgres.server.create_database("notify")
    upgrade(url)
    with open_stack(
        broker,
        url,
        log_dir=OUTPUT / "reliability" / "postgres_outage",
        services=("ingest", "inbox", "fanout"),
    ) as s:
        yield s


def ready(stack: Stack, service: str) -> int:
    try:
        return httpx.get(stack.url(service) + "/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_postgres_down_for_30s_loses_and_duplicates_nothing(
    stack: Stack, own_postgres: RestartablePostgres, report: Report
):
    join(stack, SERVER, [*USERS, SENDER])

    failures: list[str] = []

    def post_all() -> None:
        # Spread over the outage: before, during and after.
        for i in range(MESSAGES):
            status, _ = post_message(stack, f"pg-{i}", SERVER, SENDER)
            if status != 202:
                failures.append(f"pg-{i}: {status}")
            time.sleep((OUTAGE_S + 20) / MESSAGES)

    poster = threading.Thread(target=post_all)
    poster.start()
    wait_until(
        lambda: stack.metric("inbox", "notify_inbox_persisted_total") > 0,
        timeout=60,
        what="the first notifications persisted",
    )
    own_postgres.stop()
    down_at = time.monotonic()
    # The inbox cannot write its feed: it says so, and keeps its process.
    wait_until(
        lambda: ready(stack, "inbox") == 503, timeout=20, what="the inbox to report not ready"
    )
    assert stack.procs["inbox"].proc.poll() is None, "the inbox must survive the outage"
    # Ingest needs no database (unless rate limits are on): it keeps accepting.
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    assert stack.procs["inbox"].proc.poll() is None
    own_postgres.start()
    wait_until(lambda: ready(stack, "inbox") == 200, timeout=60, what="the inbox to be ready again")
    poster.join()
    assert not failures, failures

    try:
        wait_until(
            lambda: all(len(set(feed_ids(stack, u, "pg-"))) >= MESSAGES for u in USERS),
            timeout=120,
            what="every feed to hold every message",
        )
    finally:
        duplicates = record_feeds(
            report,
            {u: feed_ids(stack, u, "pg-") for u in USERS},
            MESSAGES,
            f"PostgreSQL down {OUTAGE_S} s mid-stream",
        )
    assert duplicates == 0
