"""Who is told, and what they are told: the eligibility rules and the notification shape.

Plain functions and a small class over the Directory; no Kafka, no I/O. The per-recipient
loop is the fanout's hot path, so it reads plain dicts, reuses per-message work and builds
one JSON value per recipient with orjson.

Rules (from the product's first customer, ARCHITECTURE.md "Eligibility"):
* the sender is never notified;
* a member is eligible if they are an admin or entitled;
* channel level none → nothing; mentions → only when mentioned; @everyone mentions everyone;
* the user's per-channel-type toggles (their own preferences over the upstream defaults) pick
  the delivery channels; nobody is notified on no channel at all.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from notify_fanout.directory import Directory
from notify_schemas.models import NOTIFICATION_NAMESPACE, AnnouncementRequested, MessageCreated

BODY_PREVIEW_CHARS = 100
CHANNEL_NAMES = ("in_app", "push", "email")
_NS = NOTIFICATION_NAMESPACE.bytes

# Why a candidate was not notified (metric label values; a fixed set).
SENDER = "sender"
UNKNOWN_USER = "unknown_user"
NOT_ENTITLED = "not_entitled"
CHANNEL_MUTED = "channel_muted"
NOT_MENTIONED = "not_mentioned"
NO_CHANNELS = "all_channels_off"
REASONS = (SENDER, UNKNOWN_USER, NOT_ENTITLED, CHANNEL_MUTED, NOT_MENTIONED, NO_CHANNELS)

# emit(user_id, notification_id, value)
Emit = Callable[[str, str, bytes], None]


def notification_id(source_event_id: str, user_id: str) -> str:
    """uuid5(NOTIFICATION_NAMESPACE, f"{source}:{user}") without building UUID objects;
    equal to notify_schemas.models.notification_id_for (tested)."""
    digest = bytearray(hashlib.sha1(_NS + f"{source_event_id}:{user_id}".encode()).digest()[:16])  # noqa: S324 - uuid5 is defined on SHA-1
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def preview(sender_name: str, content: str) -> str:
    text = " ".join(content.split())
    if len(text) > BODY_PREVIEW_CHARS:
        text = text[:BODY_PREVIEW_CHARS] + "…"
    return f"{sender_name}: {text}"


def effective_channels(user: dict[str, Any], prefs: dict[str, Any] | None) -> list[str]:
    toggles = (prefs or user).get("channels") or {}
    return [name for name in CHANNEL_NAMES if toggles.get(name, True)]


def quiet_hours(user: dict[str, Any], prefs: dict[str, Any] | None) -> Any:
    """The user's quiet hours: their own preference record wins over the upstream one, as
    for the channel toggles (docs/decisions/0002), including an explicit "none" (null)."""
    return (prefs or user).get("quiet_hours")


class Fanout:
    """Turns one source event into one notification per eligible recipient."""

    def __init__(self, directory: Directory) -> None:
        self.d = directory

    def message(self, msg: MessageCreated, emit: Emit, suppressed: Counter[str]) -> int:
        d = self.d
        users_get = d.users.get
        levels_get = d.channel_levels.get
        prefs_get = d.user_prefs.get
        mentions = set(msg.mentions)
        everyone = msg.mention_everyone
        sender = msg.sender_id
        level_suffix = "/" + msg.channel_id
        source = msg.message_id
        server_label = msg.server_name or msg.server_id
        channel_label = msg.channel_name or msg.channel_id
        base = {
            "title": f"New message in {server_label} #{channel_label}",
            "body": preview(msg.sender_name, msg.content),
            "action_url": f"/servers/{msg.server_id}/channels/{msg.channel_id}",
            "critical": False,
            "created_at": msg.created_at.isoformat(),
        }
        meta = {
            "message_id": msg.message_id,
            "server_id": msg.server_id,
            "channel_id": msg.channel_id,
            "sender_id": msg.sender_id,
            "sender_name": msg.sender_name,
        }
        meta_plain = {**meta, "is_mentioned": False}
        meta_mention = {**meta, "is_mentioned": True}
        priority = msg.priority
        emitted = 0
        for uid in d.members.members(msg.server_id):
            if uid == sender:
                suppressed[SENDER] += 1
                continue
            user = users_get(uid)
            if user is None:
                suppressed[UNKNOWN_USER] += 1
                continue
            if not (user["is_admin"] or user["entitled"]):
                suppressed[NOT_ENTITLED] += 1
                continue
            mentioned = everyone or uid in mentions
            level = levels_get(uid + level_suffix)
            if level is not None:
                if level == "none":
                    suppressed[CHANNEL_MUTED] += 1
                    continue
                if level == "mentions" and not mentioned:
                    suppressed[NOT_MENTIONED] += 1
                    continue
            prefs = prefs_get(uid)
            channels = effective_channels(user, prefs)
            if not channels:
                suppressed[NO_CHANNELS] += 1
                continue
            nid = notification_id(source, uid)
            value = orjson.dumps(
                {
                    "notification_id": nid,
                    "user_id": uid,
                    "type": "MENTION" if mentioned else "NEW_MESSAGE",
                    "metadata": meta_mention if mentioned else meta_plain,
                    "priority": "high" if mentioned else priority,
                    "channels": channels,
                    # The senders' delivery context (push holds non-urgent pushes in quiet
                    # hours): decided here, where the user and their preferences are at hand.
                    "timezone": user.get("timezone"),
                    "quiet_hours": quiet_hours(user, prefs),
                    **base,
                }
            )
            emit(uid, nid, value)
            emitted += 1
        return emitted

    def announcement(self, ann: AnnouncementRequested, emit: Emit, suppressed: Counter[str]) -> int:
        """Announcements go to every listed user, or every member of the server, that
        exists; entitlement and channel levels do not apply, channel toggles do."""
        users_get = self.d.users.get
        prefs_get = self.d.user_prefs.get
        # Listed users are de-duplicated (the list is bounded by the schema); a server's
        # member set has no duplicates and is iterated in place.
        recipients: Iterable[str] = (
            dict.fromkeys(ann.user_ids)
            if ann.user_ids is not None
            else self.d.members.members(ann.server_id or "")
        )
        base = {
            "type": ann.type,
            "title": ann.title,
            "body": ann.body,
            "action_url": ann.action_url,
            "metadata": {
                "announcement_id": ann.announcement_id,
                "server_id": ann.server_id,
                "is_mentioned": False,
            },
            "priority": "high" if ann.critical else ann.priority,
            "critical": ann.critical,
            "created_at": ann.created_at.isoformat(),
        }
        emitted = 0
        for uid in recipients:
            user = users_get(uid)
            if user is None:
                suppressed[UNKNOWN_USER] += 1
                continue
            prefs = prefs_get(uid)
            channels = effective_channels(user, prefs)
            if not channels:
                suppressed[NO_CHANNELS] += 1
                continue
            nid = notification_id(ann.announcement_id, uid)
            emit(
                uid,
                nid,
                orjson.dumps(
                    {
                        "notification_id": nid,
                        "user_id": uid,
                        "channels": channels,
                        "timezone": user.get("timezone"),
                        "quiet_hours": quiet_hours(user, prefs),
                        **base,
                    }
                ),
            )
            emitted += 1
        return emitted
