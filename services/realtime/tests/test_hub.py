"""Routing events to streams: isolation between users, bounded buffers, heartbeats."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from notify_realtime import sse
from notify_realtime.hub import Control, Hub, Mailbox, Outgoing, Record
from notify_schemas.models import ReadStateChanged

from .conftest import record

pytestmark = pytest.mark.anyio


def hub(**kw) -> Hub:
    return Hub(
        queue_max=kw.get("queue_max", 100),
        write_timeout_s=kw.get("write_timeout_s", 5),
        heartbeat_s=kw.get("heartbeat_s", 15),
    )


async def drained(conn) -> list:
    return await conn.mailbox.take() if len(conn.mailbox) else []


async def test_an_event_reaches_every_stream_of_its_user_and_no_one_else():
    h = hub()
    alice_tab1, alice_tab2, bob = h.connect("alice"), h.connect("alice"), h.connect("bob")
    rec = record("alice", title="for alice")
    h.dispatch([rec])
    for conn in (alice_tab1, alice_tab2):
        [item] = await drained(conn)
        assert isinstance(item, Outgoing)
        assert b"for alice" in item.frame
        assert item.notification_id == orjson.loads(rec.value)["notification_id"]
    assert await drained(bob) == []


async def test_a_payload_naming_another_user_than_its_key_is_not_delivered():
    h = hub()
    alice = h.connect("alice")
    forged = Record(
        kind=sse.NOTIFICATION,
        user_id="alice",
        value=record("mallory").value,  # payload for mallory under alice's key
        timestamp=None,
    )
    broken = Record(kind=sse.NOTIFICATION, user_id="alice", value=b"not json", timestamp=None)
    h.dispatch([forged, broken, record("alice", title="fine")])
    [item] = await drained(alice)
    assert b"fine" in item.frame


async def test_only_the_feed_fields_are_sent_with_read_state():
    h = hub()
    alice = h.connect("alice")
    h.dispatch([record("alice", timezone="Europe/Berlin", quiet_hours={"start": "22:00"})])
    [item] = await drained(alice)
    data = orjson.loads(item.frame.split(b"data: ", 1)[1])
    assert "timezone" not in data and "quiet_hours" not in data
    assert data["read"] is False and data["read_at"] is None
    assert set(data) == set(sse.FEED_FIELDS) | {"read", "read_at"}


async def test_a_read_state_change_becomes_a_read_and_an_unread_count_event():
    h = hub()
    alice = h.connect("alice")
    change = ReadStateChanged(
        change_id=uuid.uuid4(),
        user_id="alice",
        scope="one",
        notification_id=uuid.uuid4(),
        read=True,
        unread_count=4,
        changed_at=datetime.now(UTC),
    )
    h.dispatch(
        [Record(kind=sse.READ, user_id="alice", value=change.model_dump_json(), timestamp=None)]
    )
    [item] = await drained(alice)
    assert item.frame.startswith(b"event: read\ndata: ")
    assert b'"notification_id":"' + str(change.notification_id).encode() in item.frame
    assert item.frame.endswith(b'event: unread-count\ndata: {"unread":4}\n\n')


async def test_a_stream_that_falls_behind_is_told_to_resync_and_gets_nothing_more():
    h = hub(queue_max=3)
    slow, other = h.connect("alice"), h.connect("bob")
    slow.task = asyncio.current_task()  # what the stream handler records
    for i in range(5):
        h.dispatch([record("alice", title=f"n{i}")])
    h.dispatch([record("bob"), record("bob")])
    assert slow.ended and slow.end_reason == "overflow"
    assert await slow.mailbox.take() == [Control.RESYNC]
    h.dispatch([record("alice")])
    assert len(slow.mailbox) == 0
    assert not other.ended  # others are untouched
    assert len(await drained(other)) == 2
    slow.finished()


async def test_a_client_that_never_takes_its_resync_is_cut_off():
    h = hub(queue_max=1, write_timeout_s=0.05)
    blocked = asyncio.create_task(asyncio.sleep(10))  # stands in for a write that hangs
    conn = h.connect("alice")
    conn.task = blocked
    h.dispatch([record("alice"), record("alice")])
    await asyncio.sleep(0.2)
    assert conn.abandoned
    assert blocked.cancelled()


async def test_heartbeats_go_to_quiet_streams_once():
    h = hub(heartbeat_s=10)
    quiet, busy = h.connect("alice"), h.connect("bob")
    quiet.last_write -= 60
    h.heartbeat()
    h.heartbeat()
    assert await quiet.mailbox.take() == [Control.HEARTBEAT]
    assert len(busy.mailbox) == 0


async def test_shutdown_ends_every_stream_and_refuses_new_ones():
    h = hub()
    a, b = h.connect("alice"), h.connect("bob")
    h.begin_shutdown()
    assert h.closing
    assert await a.mailbox.take() == [Control.SHUTDOWN]
    assert await b.mailbox.take() == [Control.SHUTDOWN]


async def test_disconnect_forgets_the_user_and_counts_streams():
    h = hub()
    a1, a2 = h.connect("alice"), h.connect("alice")
    assert h.wants("alice") and h.count == 2
    h.disconnect(a1)
    h.disconnect(a1)  # twice is harmless
    assert h.wants("alice") and h.count == 1
    h.disconnect(a2)
    assert not h.wants("alice") and h.count == 0


async def test_a_mailbox_wakes_its_reader_and_refuses_beyond_its_limit():
    box = Mailbox(limit=2)
    reader = asyncio.create_task(box.take())
    await asyncio.sleep(0)
    assert box.put(Control.HEARTBEAT)
    assert await asyncio.wait_for(reader, 1) == [Control.HEARTBEAT]
    assert box.put(Control.HEARTBEAT) and box.put(Control.HEARTBEAT)
    assert not box.put(Control.HEARTBEAT)
    box.force(Control.CLOSED)
    assert len(box) == 3


async def test_a_burst_larger_than_the_limit_reaches_a_client_that_keeps_up():
    h = hub(queue_max=3)
    conn = h.connect("alice")
    reader = asyncio.create_task(conn.mailbox.take())
    await asyncio.sleep(0)  # the stream is waiting for events, as one that keeps up is
    h.dispatch([record("alice", title=f"n{i}") for i in range(10)])
    assert not conn.ended
    assert len(await reader) == 10
