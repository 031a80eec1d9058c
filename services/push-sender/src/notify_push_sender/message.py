"""What a notification becomes as a push: the message the service worker shows, and the
RFC 8030 headers (TTL, Urgency, Topic). Plain functions, no I/O.

The message is the product's first customer's (seeds 000): title, body, icon, badge,
data {url, notification_id, type, timestamp}, requireInteraction for mentions, tag and
renotify; plus the template's buttons as `actions` with their targets in data.actions. It
must fit one 4 096-byte aes128gcm record: 4 096 - 16 (AEAD tag) - 1 (padding
delimiter) - 86 (header: salt, record size, key id length, the 65-byte key id) = 3 993 bytes
of plaintext. A longer message is made to fit by trimming the body, never refused.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from notify_schemas.models import NotificationCreated, QuietHours

MAX_PLAINTEXT = 3993
ELLIPSIS = "…"

Urgency = Literal["very-low", "low", "normal", "high"]


@dataclass(frozen=True)
class PushContent:
    payload: bytes
    urgency: Urgency
    topic: str | None
    trimmed: bool


def is_mention(n: NotificationCreated) -> bool:
    return n.type == "MENTION" or n.metadata.is_mentioned


def urgency(n: NotificationCreated) -> Urgency:
    """high: mentions, critical and high-priority notifications (they also break through
    quiet hours); low: bulk announcements (ADMIN_ANNOUNCEMENT, SYSTEM) and low-priority
    ones, which a device on battery may defer; normal: everything else."""
    if n.critical or is_mention(n) or n.priority == "high":
        return "high"
    if n.type in ("ADMIN_ANNOUNCEMENT", "SYSTEM") or n.priority == "low":
        return "low"
    return "normal"


def _topic(key: str) -> str:
    # RFC 8030 5.4: at most 32 characters of the base64url alphabet.
    digest = hashlib.sha256(key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def topic(n: NotificationCreated) -> str | None:
    """Plain new-message notifications of one channel share a topic, so a newer one replaces
    an older one still waiting at the push service (the user needs the latest, not each).
    Everything else (mentions, announcements) gets a topic of its own notification: each
    must arrive, and a retried copy replaces an earlier one that is still undelivered."""
    meta = n.metadata
    if n.type == "NEW_MESSAGE" and not is_mention(n) and meta.server_id and meta.channel_id:
        return _topic(f"channel:{meta.server_id}/{meta.channel_id}")
    return _topic(f"notification:{n.notification_id}")


def tag(n: NotificationCreated) -> str:
    """The browser-side counterpart of the topic: a shown notification with the same tag is
    replaced (renotify makes the replacement alert again)."""
    meta = n.metadata
    if n.type == "NEW_MESSAGE" and not is_mention(n) and meta.server_id and meta.channel_id:
        return f"channel:{meta.server_id}/{meta.channel_id}"
    return f"notification:{n.notification_id}"


# Where an API-action button leads: the notification center performs the action with the
# user's token (the service worker holds none). Same origin as the worker, so never prefixed.
APP_ACTION_URL = "/app/?{action}={notification_id}"


def _absolute(url: str, url_base: str) -> str:
    if url_base and url.startswith("/"):
        return url_base.rstrip("/") + url
    return url


def actions(
    n: NotificationCreated, url_base: str = ""
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The template's buttons as Notification actions ({action, title}) and, for the
    service worker's notificationclick, where each one leads."""
    shown: list[dict[str, str]] = []
    targets: dict[str, str] = {}
    for i, a in enumerate(n.actions):
        key = f"a{i}"
        shown.append({"action": key, "title": a.label})
        if a.url is not None:
            targets[key] = _absolute(a.url, url_base)
        else:
            targets[key] = APP_ACTION_URL.format(action=a.action, notification_id=n.notification_id)
    return shown, targets


def message(n: NotificationCreated, *, icon: str, badge: str, url_base: str = "") -> dict[str, Any]:
    url = _absolute(n.action_url or "/", url_base)
    buttons, targets = actions(n, url_base)
    msg: dict[str, Any] = {
        "title": n.title,
        "body": n.body,
        "icon": icon,
        "badge": badge,
        "data": {
            "url": url,
            "notification_id": str(n.notification_id),
            "type": n.type,
            "timestamp": int(n.created_at.timestamp() * 1000),
        },
        "requireInteraction": is_mention(n),
        "tag": tag(n),
        "renotify": True,
    }
    if buttons:
        msg["actions"] = buttons
        msg["data"]["actions"] = targets
    return msg


def _encode(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg)


def _shrink(msg: dict[str, Any], field: str, path: tuple[str, ...] = ()) -> bytes | None:
    """Cut msg[...][field] to the longest prefix (plus an ellipsis) that makes the message
    fit; None when even an empty value does not."""
    holder = msg
    for p in path:
        holder = holder[p]
    text: str = holder[field]
    holder[field] = ""
    if len(_encode(msg)) > MAX_PLAINTEXT:
        return None
    lo, hi = 0, len(text)  # binary search over characters: UTF-8 and JSON escapes vary
    while lo < hi:
        mid = (lo + hi + 1) // 2
        holder[field] = text[:mid] + ELLIPSIS
        if len(_encode(msg)) <= MAX_PLAINTEXT:
            lo = mid
        else:
            hi = mid - 1
    holder[field] = text[:lo] + ELLIPSIS if lo else ""
    return _encode(msg)


def fit(msg: dict[str, Any]) -> tuple[bytes, bool]:
    """The message as JSON within MAX_PLAINTEXT bytes, and whether it had to be cut.

    The body goes first; only a message whose other fields alone are too long (a huge
    title or URL) loses its title, then its URL, so something is always sent."""
    encoded = _encode(msg)
    if len(encoded) <= MAX_PLAINTEXT:
        return encoded, False
    for field, path in (("body", ()), ("title", ()), ("url", ("data",))):
        shrunk = _shrink(msg, field, path)
        if shrunk is not None:
            return shrunk, True
    msg["data"]["url"] = "/"  # unreachable for contract-valid ids; kept so nothing fails
    return _encode(msg), True


def content(n: NotificationCreated, *, icon: str, badge: str, url_base: str = "") -> PushContent:
    payload, trimmed = fit(message(n, icon=icon, badge=badge, url_base=url_base))
    return PushContent(payload=payload, urgency=urgency(n), topic=topic(n), trimmed=trimmed)


# --- quiet hours ---------------------------------------------------------------------------


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # the contract bounds the string, not its meaning


def _hm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(quiet: QuietHours | None, timezone: str | None, now: datetime) -> datetime | None:
    """The end of the quiet window `now` falls in (UTC), or None outside quiet hours.

    The window is [start, end) in the user's timezone; start > end wraps over midnight;
    start == end is an empty window. An unknown timezone is taken as UTC.
    """
    if quiet is None:
        return None
    start, end = _hm(quiet.start), _hm(quiet.end)
    if start == end:
        return None
    zone = _zone(timezone)
    local = now.astimezone(zone)
    t = local.time()
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    # Wall-clock end in the user's zone (DST-aware), as an instant.
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)
