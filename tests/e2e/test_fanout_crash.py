"""SIGKILL the fanout mid-stream and restart it: no notification lost, none duplicated.

The restarted worker has empty memory: it must rebuild its directory tables from their
changelogs (on the embedded broker this exercises the high-watermark workaround) and
replay the batches it had not acknowledged.
"""

from __future__ import annotations

import json
import threading

import pytest

from notify_common.testing.kafka import read_topic
from notify_schemas import topics
from tests.e2e.conftest import Stack, wait_stable, wait_until

pytestmark = pytest.mark.e2e

SERVER = "crash-srv"
USERS = [f"member-{i:02d}" for i in range(25)]
SENDER = USERS[0]
MESSAGES = 800


def feed_message_ids(stack: Stack, user_id: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    with stack.user(user_id) as c:
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/notifications", params=params).json()
            ids += [n["metadata"]["message_id"] for n in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return ids


@pytest.mark.reliability
def test_sigkill_fanout_mid_stream_loses_and_duplicates_nothing(stack: Stack):
    with stack.ingest() as ingest:
        for uid in USERS:
            assert (
                ingest.put(
                    f"/v1/users/{uid}", json={"display_name": uid, "entitled": True}
                ).status_code
                == 202
            )
            assert ingest.put(f"/v1/servers/{SERVER}/members/{uid}", json={}).status_code == 202
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="members"') == len(USERS)
        ),
        timeout=60,
        what="members in the fanout",
    )

    posted = 0
    failures: list[str] = []

    def post_all() -> None:
        nonlocal posted
        with stack.ingest() as ingest:
            for i in range(MESSAGES):
                r = ingest.post(
                    "/v1/messages",
                    json={
                        "message_id": f"crash-{i}",
                        "server_id": SERVER,
                        "channel_id": "c",
                        "sender_id": SENDER,
                        "sender_name": "S",
                        "content": f"#{i}",
                    },
                )
                if r.status_code != 202:
                    failures.append(r.text)
                posted += 1

    poster = threading.Thread(target=post_all)
    poster.start()
    # Kill once the first worker has demonstrably been fanning out (its output reached the
    # feed) and while messages are still being posted.
    wait_until(
        lambda: (
            posted >= MESSAGES // 4 and stack.metric("inbox", "notify_inbox_persisted_total") > 0
        ),
        timeout=60,
        what="the fanout to be under way",
    )
    stack.procs["fanout"].kill()
    at_kill = posted
    assert 0 < at_kill < MESSAGES, "the kill must land mid-stream"
    restarted = stack.start("fanout")
    restarted.wait_ready(timeout=120)
    # The new worker started with empty memory: its tables must be rebuilt completely.
    for table, size in (("users", len(USERS)), ("members", len(USERS))):
        wait_until(
            lambda t=table, n=size: (
                stack.metric("fanout", "notify_fanout_table_entries", f'table="{t}"') == n
            ),
            timeout=30,
            what=f"the restarted fanout's {table} table",
        )
    poster.join()
    assert not failures

    expected_each = MESSAGES
    recipients = [u for u in USERS if u != SENDER]

    def unread(uid: str) -> int:
        with stack.user(uid) as c:
            return int(c.get("/v1/notifications/unread-count").json()["unread"])

    try:
        wait_until(
            lambda: all(unread(u) >= expected_each for u in recipients),
            timeout=180,
            what="every member to receive every message",
        )
    except AssertionError:
        counts = {u: unread(u) for u in recipients}
        have = set(feed_message_ids(stack, recipients[0]))
        inputs = read_topic(
            stack.env["NOTIFY_KAFKA_BOOTSTRAP"],
            stack.env["NOTIFY_TOPIC_PREFIX"] + topics.MESSAGE_CREATED,
            MESSAGES,
        )
        where = {json.loads(m.value())["message_id"]: (m.partition(), m.offset()) for m in inputs}
        missing = sorted(
            (where.get(f"crash-{i}"), f"crash-{i}")
            for i in range(MESSAGES)
            if f"crash-{i}" not in have
        )
        raise AssertionError(
            f"expected {expected_each} each (kill after {at_kill} posts); feeds hold {counts}; "
            f"{len(inputs)} inputs on the topic; missing (partition, offset): {missing}"
        ) from None
    # Let any late duplicate arrive before counting exactly.
    wait_stable(
        lambda: stack.metric("inbox", "notify_consumer_messages_total"),
        quiet=3,
        timeout=60,
        what="the inbox's consumption",
    )
    for uid in recipients:
        assert unread(uid) == expected_each, uid
    ids = feed_message_ids(stack, recipients[-1])
    assert sorted(ids) == sorted(f"crash-{i}" for i in range(MESSAGES))
    with stack.user(SENDER) as c:
        assert c.get("/v1/notifications/unread-count").json()["unread"] == 0
