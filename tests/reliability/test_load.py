"""Load: locust drives ingest POSTs, feed reads and open SSE streams against the running
services for 1 minute (10 minutes in the long mode: make test-reliability). No request may
fail, and each service's memory must be flat after the warm-up (RSS reported at the start
and the end of the measured part)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from notify_common.auth import issue_user_token
from tests.e2e.conftest import OUTPUT, SERVICE_TOKEN, Stack
from tests.reliability.conftest import Report, join

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

STACK_SERVICES = ("ingest", "inbox", "fanout", "realtime")
SERVER = "load-srv"
SENDER = "load-sender"
USERS = [f"load-{i:02d}" for i in range(20)]
LOCUSTFILE = Path(__file__).parent / "load" / "locustfile.py"
WARMUP_S = 15
# "Flat": after the warm-up a process may grow by this much at most (allocator noise,
# caches filling), far below what a per-request leak adds over minutes.
GROWTH_LIMIT = 0.25
GROWTH_FLOOR_MB = 24.0


@pytest.fixture(scope="module")
def directory(stack: Stack) -> Stack:
    join(stack, SERVER, [SENDER, *USERS])
    return stack


def rss_mb(stack: Stack) -> dict[str, float]:
    out = {}
    for name, proc in stack.procs.items():
        assert proc.pid is not None
        p = psutil.Process(proc.pid)
        out[name] = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
    return out


# Both modes are minutes long with their set-up: make test-reliability runs them (the short
# one alone: make test-reliability PYTEST_ARGS="-k 'load and 60'"); make test leaves them out.
@pytest.mark.long
@pytest.mark.parametrize("seconds", [60, 600], ids=str)
def test_load_without_errors_and_flat_memory(directory: Stack, report: Report, seconds: int):
    stack = directory
    out = OUTPUT / "reliability" / f"load-{seconds}"
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "NOTIFY_LOAD_INGEST": stack.url("ingest"),
        "NOTIFY_LOAD_INBOX": stack.url("inbox"),
        "NOTIFY_LOAD_REALTIME": stack.url("realtime"),
        "NOTIFY_LOAD_SERVICE_TOKEN": SERVICE_TOKEN,
        "NOTIFY_LOAD_USERS": json.dumps({u: issue_user_token(stack.auth, u) for u in USERS}),
        "NOTIFY_LOAD_SERVER": SERVER,
        "NOTIFY_LOAD_SENDER": SENDER,
    }
    locust = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--users",
            "12",
            "--spawn-rate",
            "4",
            "--run-time",
            f"{WARMUP_S + seconds}s",
            "--csv",
            str(out / "locust"),
            "--only-summary",
            "--stop-timeout",
            "15",
        ],
        env=env,
        stdout=(out / "locust.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(WARMUP_S)
        start = rss_mb(stack)
        samples: list[dict[str, float]] = [start]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(5):
                samples.append(rss_mb(stack))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        locust.wait(seconds + 120)
        done.set()
        end = rss_mb(stack)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait(10)

    with (out / "locust_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    growth = {
        name: end[name] - start[name]
        for name in start
        if end[name] - start[name] > max(GROWTH_FLOOR_MB, GROWTH_LIMIT * start[name])
    }
    report.record(
        "http (ingest, inbox, realtime)",
        sent=requests,
        received=requests - failures,
        duplicates=0,
        lost=failures,
        note=(
            f"{seconds} s, 12 users; RSS MB start→end: "
            + ", ".join(f"{n} {start[n]:.0f}→{end[n]:.0f}" for n in start)
        ),
    )
    assert requests > seconds, "the load barely ran"
    assert failures == 0, (out / "locust_failures.csv").read_text()
    assert locust.returncode == 0, (out / "locust.log").read_text()[-2000:]
    assert not growth, f"memory grew after the warm-up (MB): {growth}"
    # Every service still answers.
    for name in STACK_SERVICES:
        stack.procs[name].wait_ready(timeout=10)
