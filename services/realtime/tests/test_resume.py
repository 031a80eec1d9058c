"""Resuming with Last-Event-ID: what was missed, in order, with no gap."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from notify_realtime.recent import RecentIndex
from notify_realtime.resume import backfill

from .conftest import notification
from .fakes import FakeFeed

pytestmark = pytest.mark.anyio


def ids(result) -> list[str]:
    return [orjson.loads(f.split(b"data: ", 1)[1])["notification_id"] for f in result.frames]


def feed_of(user: str, n: int) -> tuple[FakeFeed, list[dict]]:
    feed = FakeFeed()
    items = [notification(user, title=f"n{i}") for i in range(n)]
    for item in items:
        feed.persist(item)
    feed.persist(notification("someone-else"))
    return feed, items


async def run(feed, recent, user, last, **kw):
    return await backfill(
        store=feed,
        recent=recent,
        user_id=user,
        last_event_id=last,
        limit=kw.get("limit", 100),
        wait_s=kw.get("wait_s", 1.0),
        poll_s=0.01,
    )


async def test_the_notifications_after_the_last_event_id_are_replayed_in_order():
    feed, items = feed_of("alice", 5)
    result = await run(
        feed, RecentIndex(window_s=60, max_users=10), "alice", items[1]["notification_id"]
    )
    assert result.resync is None
    assert ids(result) == [i["notification_id"] for i in items[2:]]
    assert result.notification_ids == {i["notification_id"] for i in items[2:]}
    assert all(b"\nid: " in f for f in result.frames)


async def test_nothing_is_replayed_to_a_client_that_is_up_to_date():
    feed, items = feed_of("alice", 3)
    result = await run(
        feed, RecentIndex(window_s=60, max_users=10), "alice", items[-1]["notification_id"]
    )
    assert result.resync is None and result.frames == []


async def test_the_resume_waits_for_notifications_that_went_by_before_they_were_persisted():
    # The client saw n0 live; n1..n3 went by here while it was away, but the inbox has not
    # stored them yet. Replaying the feed now would silently skip them.
    feed, items = feed_of("alice", 1)
    late = [notification("alice", title=f"late{i}") for i in range(3)]
    recent = RecentIndex(window_s=60, max_users=10)
    for item in [*items, *late]:
        recent.saw("alice", item["notification_id"])

    async def inbox_catches_up():
        await asyncio.sleep(0.2)
        for item in late:
            feed.persist(item)

    writer = asyncio.create_task(inbox_catches_up())
    result = await run(feed, recent, "alice", items[0]["notification_id"], wait_s=5)
    await writer
    assert result.resync is None
    assert ids(result) == [i["notification_id"] for i in late]


async def test_a_feed_that_stays_behind_replays_what_it_has_and_asks_for_a_resync():
    feed, items = feed_of("alice", 2)
    recent = RecentIndex(window_s=60, max_users=10)
    recent.saw("alice", str(uuid.uuid4()))  # went by, never persisted within the wait
    result = await run(feed, recent, "alice", items[0]["notification_id"], wait_s=0.1)
    assert ids(result) == [items[1]["notification_id"]]
    assert result.resync == "feed_behind"


async def test_an_unknown_or_foreign_last_event_id_asks_for_a_resync():
    feed, items = feed_of("alice", 2)
    recent = RecentIndex(window_s=60, max_users=10)
    for last in (str(uuid.uuid4()), "not-a-uuid", items[0]["notification_id"]):
        # The last one is alice's: for bob it is unknown, never another user's position.
        result = await run(feed, recent, "bob", last, wait_s=0.05)
        assert result.resync == "unknown_last_event_id"
        assert result.frames == []


async def test_a_client_too_far_behind_reloads_instead_of_a_long_replay():
    feed, items = feed_of("alice", 12)
    result = await run(
        feed, RecentIndex(window_s=60, max_users=10), "alice", items[0]["notification_id"], limit=10
    )
    assert result.resync == "backfill_limit" and result.frames == []


async def test_a_database_outage_asks_for_a_resync():
    feed, items = feed_of("alice", 2)
    feed.down = True
    result = await run(
        feed, RecentIndex(window_s=60, max_users=10), "alice", items[0]["notification_id"]
    )
    assert result.resync == "database_unavailable"
