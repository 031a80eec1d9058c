"""The wire format a browser's EventSource parses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from notify_realtime import sse


def test_an_event_has_type_id_and_data_and_ends_with_a_blank_line():
    assert sse.frame("notification", b'{"a":1}', event_id="n-1") == (
        b'event: notification\nid: n-1\ndata: {"a":1}\n\n'
    )


def test_events_without_an_id_leave_the_resume_point_alone():
    assert b"\nid:" not in sse.unread_count_frame(3)
    assert sse.unread_count_frame(3) == b'event: unread-count\ndata: {"unread":3}\n\n'


def test_line_breaks_cannot_break_the_framing():
    with pytest.raises(sse.FrameError):
        sse.frame("notification", b'{"a":\n1}\n\nevent: evil')
    with pytest.raises(sse.FrameError):
        sse.frame("notification", b"{}", event_id="x\nevent: evil")


def test_a_notification_frame_carries_its_id_and_the_feed_item_shape():
    nid = uuid.uuid4()
    item = {
        "notification_id": str(nid),
        "title": "line one\nline two <b>",
        "created_at": datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
        "read": False,
    }
    raw = sse.notification_frame(item)
    assert raw.startswith(b"event: notification\nid: " + str(nid).encode() + b"\ndata: ")
    data = raw.split(b"data: ", 1)[1]
    assert data.endswith(b"\n\n") and data.count(b"\n") == 2  # the newline stays escaped
    parsed = orjson.loads(data)
    assert parsed["title"] == "line one\nline two <b>"
    assert parsed["created_at"] == "2026-11-22T09:00:00Z"


def test_resync_sets_the_retry_delay_and_names_the_reason():
    assert sse.resync_frame("overflow", 2000) == (
        b'retry: 2000\n\nevent: resync\ndata: {"reason":"overflow"}\n\n'
    )
