"""The broker unreachable for a while (its process frozen with SIGSTOP, as a hung or
partitioned broker looks to clients): ingest answers 503 with Retry-After for what it
cannot get confirmed, every 202 it gave is delivered once the broker is back, and the
clients' retries of the 503s (same message ids) are delivered exactly once.

The test runs its own embedded broker (Tansu keeps everything in memory, so it is frozen
rather than restarted)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from notify_common.testing import infra
from notify_common.testing.pytest_plugin import new_database
from tests.e2e.conftest import OUTPUT, Stack, open_stack, wait_until
from tests.reliability.conftest import Report, feed_ids, join, post_message, record_feeds

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

SERVER = "bo-srv"
SENDER = "bo-sender"
USERS = ["bo-a", "bo-b", "bo-c"]
MESSAGES = 60
FREEZE_S = 12


@pytest.fixture(scope="module")
def own_broker() -> Iterator[infra.Broker]:
    b = infra.embedded_broker(OUTPUT / "reliability" / "broker_outage" / "tansu.log")
    try:
        yield b
    finally:
        if b.pid is not None:
            os.kill(b.pid, signal.SIGCONT)  # never leave it frozen
        b.stop()


@pytest.fixture(scope="module")
def stack(own_broker: infra.Broker, postgres_server: infra.Postgres) -> Iterator[Stack]:
    name, url = new_database(postgres_server)
    try:
        with open_stack(
            own_broker,
            url,
            log_dir=OUTPUT / "reliability" / "broker_outage",
            env_extra={"NOTIFY_INGEST_PUBLISH_TIMEOUT_S": "3"},
        ) as s:
            yield s
    finally:
        postgres_server.drop_database(name)


def post(stack: Stack, i: int) -> tuple[int, str]:
    return post_message(stack, f"bo-{i}", SERVER, SENDER)


def test_broker_frozen_mid_stream(stack: Stack, own_broker: infra.Broker, report: Report):
    join(stack, SERVER, [SENDER, *USERS])

    answers: dict[int, tuple[int, str]] = {}

    def post_all() -> None:
        for i in range(MESSAGES):
            answers[i] = post(stack, i)
            time.sleep(0.3)

    poster = threading.Thread(target=post_all)
    poster.start()
    wait_until(lambda: len(answers) >= 10, timeout=60, what="the first posts")
    assert own_broker.pid is not None
    os.kill(own_broker.pid, signal.SIGSTOP)
    try:
        time.sleep(FREEZE_S)
    finally:
        os.kill(own_broker.pid, signal.SIGCONT)
    poster.join()

    refused = sorted(i for i, (status, _) in answers.items() if status != 202)
    assert refused, "the frozen broker must have made ingest refuse some posts"
    for i in refused:
        status, retry_after = answers[i]
        assert status == 503 and retry_after, (i, status, retry_after)
    # Clients retry what was refused, as Retry-After tells them.
    for i in refused:
        deadline = time.monotonic() + 60
        while post(stack, i)[0] != 202:
            assert time.monotonic() < deadline, f"bo-{i} never accepted after the outage"
            time.sleep(1)

    try:
        wait_until(
            lambda: all(len(set(feed_ids(stack, u, "bo-"))) >= MESSAGES for u in USERS),
            timeout=180,
            what="every message in every feed",
        )
    finally:
        duplicates = record_feeds(
            report,
            {u: feed_ids(stack, u, "bo-") for u in USERS},
            MESSAGES,
            f"broker frozen {FREEZE_S} s; {len(refused)} posts answered 503, then retried",
        )
    assert duplicates == 0
