"""The Server-Sent Events wire format (HTML Living Standard, "server-sent events").

An event is `field: value` lines closed by a blank line. `id` sets the id the browser sends
back as Last-Event-ID when it reconnects, so only notifications carry one: read-state and
count events leave the client's resume point where it was. Values must not contain line
breaks; every data payload here is compact JSON, which escapes them.
"""

from __future__ import annotations

from typing import Any

import orjson

NOTIFICATION = "notification"
READ = "read"
UNREAD_COUNT = "unread-count"
RESYNC = "resync"

HEARTBEAT = b": keep-alive\n\n"

# The notification fields a client receives, live or replayed: the feed API's item shape,
# so the page renders both the same way (and nothing else of the event leaks to it).
FEED_FIELDS = (
    "notification_id",
    "user_id",
    "type",
    "title",
    "body",
    "action_url",
    "metadata",
    "priority",
    "critical",
    "channels",
    "created_at",
)


class FrameError(ValueError):
    """A value that cannot be put on the wire (it would break the framing)."""


def _line_safe(value: bytes) -> bytes:
    if b"\n" in value or b"\r" in value:
        raise FrameError("SSE field values cannot contain line breaks")
    return value


def frame(event: str, data: bytes, *, event_id: str | None = None) -> bytes:
    parts = [b"event: ", event.encode(), b"\n"]
    if event_id is not None:
        parts += [b"id: ", _line_safe(event_id.encode()), b"\n"]
    parts += [b"data: ", _line_safe(data), b"\n\n"]
    return b"".join(parts)


def retry(ms: int) -> bytes:
    """Set the client's reconnection delay (an event of only a retry field dispatches nothing)."""
    return b"retry: %d\n\n" % ms


def dumps(value: Any) -> bytes:
    # UTC datetimes as "…Z", like the feed API, so replayed and live events look alike.
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def notification_frame(item: dict[str, Any]) -> bytes:
    """`item` has the feed fields plus read/read_at; its notification_id becomes the SSE id."""
    return frame(NOTIFICATION, dumps(item), event_id=str(item["notification_id"]))


def unread_count_frame(unread: int) -> bytes:
    return frame(UNREAD_COUNT, dumps({"unread": unread}))


def resync_frame(reason: str, retry_ms: int) -> bytes:
    return retry(retry_ms) + frame(RESYNC, dumps({"reason": reason}))
