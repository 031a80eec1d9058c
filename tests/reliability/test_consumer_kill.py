"""SIGKILL a consumer in the middle of a stream of messages and start it again: every
notification reaches its channel, and nobody gets one twice.

Here: the inbox (feed rows) and realtime (SSE events, the client resuming with
Last-Event-ID). The fanout, push-sender and email-digest have theirs beside their code
(tests/e2e/test_fanout_crash.py, services/push-sender/tests/test_e2e.py,
services/email-digest/tests/test_replicas.py), also marked `reliability`.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from notify_common.auth import issue_user_token
from notify_common.testing.sse import Event, SSEClient, StreamClosed
from tests.e2e.conftest import Stack, wait_until
from tests.reliability.conftest import Report, feed_ids, join, post_message, record_feeds

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

STACK_SERVICES = ("ingest", "inbox", "fanout", "realtime")
SERVER = "kill-srv"
SENDER = "kill-sender"
USERS = [f"kill-{i:02d}" for i in range(10)]


@pytest.fixture(scope="module")
def directory(stack: Stack) -> Stack:
    join(stack, SERVER, [SENDER, *USERS])
    return stack


class Poster(threading.Thread):
    def __init__(self, stack: Stack, tag: str, count: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.tag, self.count = stack, tag, count
        self.posted = 0
        self.failures: list[str] = []

    def run(self) -> None:
        for i in range(self.count):
            status, _ = post_message(self.stack, f"{self.tag}-{i}", SERVER, SENDER)
            if status != 202:
                self.failures.append(f"{self.tag}-{i}: {status}")
            self.posted += 1


def test_sigkill_inbox_mid_stream(directory: Stack, report: Report):
    stack = directory
    count = 300
    poster = Poster(stack, "inbox-kill", count)
    poster.start()
    wait_until(
        lambda: (
            poster.posted >= count // 4
            and stack.metric("inbox", "notify_inbox_persisted_total") > 0
        ),
        timeout=60,
        what="the inbox to be persisting",
    )
    port = stack.procs["inbox"].port
    stack.procs["inbox"].kill()
    killed_at = poster.posted
    stack.start("inbox", port).wait_ready(timeout=120)
    poster.join()
    assert not poster.failures
    try:
        wait_until(
            lambda: all(len(set(feed_ids(stack, u, "inbox-kill-"))) >= count for u in USERS),
            timeout=180,
            what="every feed to hold every message",
        )
    finally:
        duplicates = record_feeds(
            report,
            {u: feed_ids(stack, u, "inbox-kill-") for u in USERS},
            count,
            f"inbox SIGKILLed after {killed_at} posts",
        )
    assert duplicates == 0


def test_sigkill_realtime_mid_stream_and_resume(directory: Stack, report: Report):
    stack = directory
    count = 150
    user = USERS[0]
    token = issue_user_token(stack.auth, user)
    url = stack.url("realtime") + "/v1/stream"
    got: list[Event] = []
    client = SSEClient(url, token=token).connect()
    client.take("unread-count")
    poster = Poster(stack, "rt-kill", count)
    poster.start()
    while len(got) < count // 5:
        got += client.take("notification", timeout=60)
    port = stack.procs["realtime"].port
    stack.procs["realtime"].kill()
    # The client notices the connection is gone.
    try:
        while True:
            event = client.next(timeout=30)
            if event.event == "notification":
                got.append(event)
    except StreamClosed:
        pass
    client.close()
    before = len(got)
    stack.start("realtime", port).wait_ready(timeout=120)
    poster.join()
    assert not poster.failures
    # The browser reconnects with the last id it saw: the feed fills the gap, live follows.
    resumed = SSEClient(url, token=token, last_event_id=got[-1].id).connect()
    try:

        def all_seen() -> bool:
            try:
                while True:
                    event = resumed.next(timeout=0.5)
                    if event.event == "notification":
                        got.append(event)
            except TimeoutError:
                pass
            return len({e.id for e in got}) >= count

        try:
            wait_until(all_seen, timeout=120, what="every notification on the stream")
        finally:
            ids = Counter(e.id for e in got)
            received = len(ids)
            duplicates = sum(n - 1 for n in ids.values())
            report.record(
                "realtime (SSE)",
                sent=count,
                received=received,
                duplicates=duplicates,
                lost=count - received,
                note=f"realtime SIGKILLed after {before} events; resumed with Last-Event-ID",
            )
    finally:
        resumed.close()
    assert duplicates == 0
