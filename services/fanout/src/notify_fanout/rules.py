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

from notify_common.templates import Rendered, TemplateRegistry
from notify_fanout.directory import Directory
from notify_schemas.models import NOTIFICATION_NAMESPACE, AnnouncementRequested, MessageCreated

BODY_PREVIEW_CHARS = 100
CHANNEL_NAMES = ("in_app", "push", "email")
_NS = NOTIFICATION_NAMESPACE.bytes

# Why a candidate was not notified (metric label values and the reasons of
# notify.suppressions.v1; a fixed set). The sender is counted, never recorded per user.
SENDER = "sender"
UNKNOWN_USER = "unknown_user"
NOT_ENTITLED = "not_entitled"
CHANNEL_MUTED = "channel_muted"
NOT_MENTIONED = "not_mentioned"
NO_CHANNELS = "all_channels_off"
REASONS = (SENDER, UNKNOWN_USER, NOT_ENTITLED, CHANNEL_MUTED, NOT_MENTIONED, NO_CHANNELS)

# emit(user_id, notification_id, value)
Emit = Callable[[str, str, bytes], None]


def on_priority_lane(priority: str, critical: bool) -> bool:
    """Critical and high-priority notifications (mentions are high) travel on the priority
    lane, so a backlog of bulk ones never delays them (docs/decisions/0010-priority-lanes.md)."""
    return critical or priority == "high"


class Suppressed:
    """Who one source event did not notify, and why.

    `users` holds (user_id, reason) per suppressed candidate, in audience order: the rules
    call its bound `append` (one tuple and one list append per suppressed user, nothing per
    notified one). The sender is never a candidate and is only counted.
    """

    __slots__ = ("sender", "users")

    def __init__(self) -> None:
        self.users: list[tuple[str, str]] = []
        self.sender = 0

    def counts(self) -> Counter[str]:
        """Suppressions by reason (the sender included), for the summary and the metrics."""
        counts = Counter(reason for _, reason in self.users)
        if self.sender:
            counts[SENDER] += self.sender
        return counts


def notification_id(source_event_id: str, user_id: str) -> str:
    """uuid5(NOTIFICATION_NAMESPACE, f"{source}:{user}") without building UUID objects;
    equal to notify_schemas.models.notification_id_for (tested)."""
    digest = bytearray(hashlib.sha1(_NS + f"{source_event_id}:{user_id}".encode()).digest()[:16])  # noqa: S324 - uuid5 is defined on SHA-1
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def excerpt(content: str) -> str:
    """The message's first BODY_PREVIEW_CHARS characters, whitespace collapsed."""
    text = " ".join(content.split())
    if len(text) > BODY_PREVIEW_CHARS:
        text = text[:BODY_PREVIEW_CHARS] + "…"
    return text


def preview(sender_name: str, content: str) -> str:
    return f"{sender_name}: {excerpt(content)}"


_default_templates: TemplateRegistry | None = None


def default_templates() -> TemplateRegistry:
    global _default_templates
    if _default_templates is None:
        _default_templates = TemplateRegistry.load()
    return _default_templates


class _Rendering:
    """A source event's templates rendered once per (type, locale) among its recipients:
    the JSON fields they add to each notification."""

    def __init__(self, templates: TemplateRegistry, variables: dict[str, Any]) -> None:
        self._templates = templates
        self._variables = variables
        self._done: dict[tuple[str, str | None], dict[str, Any]] = {}

    def fields(self, type_: str, locale: str | None) -> dict[str, Any]:
        key = (type_, locale)
        done = self._done.get(key)
        if done is None:
            r: Rendered = self._templates.render(type_, locale, self._variables)
            done = {
                "title": r.title,
                "body": r.body,
                "action_url": r.url,
                "actions": list(r.actions),
            }
            self._done[key] = done
        return done


def effective_channels(user: dict[str, Any], prefs: dict[str, Any] | None) -> list[str]:
    toggles = (prefs or user).get("channels") or {}
    return [name for name in CHANNEL_NAMES if toggles.get(name, True)]


def quiet_hours(user: dict[str, Any], prefs: dict[str, Any] | None) -> Any:
    """The user's quiet hours: their own preference record wins over the upstream one, as
    for the channel toggles (docs/decisions/0002), including an explicit "none" (null)."""
    return (prefs or user).get("quiet_hours")


class Fanout:
    """Turns one source event into one notification per eligible recipient."""

    def __init__(self, directory: Directory, templates: TemplateRegistry | None = None) -> None:
        self.d = directory
        self.templates = templates or default_templates()

    def message(
        self,
        msg: MessageCreated,
        emit: Emit,
        suppressed: Suppressed,
        emit_priority: Emit | None = None,
    ) -> int:
        """`emit_priority` takes the notifications of the priority lane (mentions, and all of
        a high-priority message); without it `emit` takes every one."""
        d = self.d
        skip = suppressed.users.append
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
        text = _Rendering(
            self.templates,
            {
                "server_id": msg.server_id,
                "server_name": server_label,
                "channel_id": msg.channel_id,
                "channel_name": channel_label,
                "sender_id": msg.sender_id,
                "sender_name": msg.sender_name,
                "message_id": msg.message_id,
                "preview": excerpt(msg.content),
            },
        )
        base = {"critical": False, "created_at": msg.created_at.isoformat()}
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
        emit_high = emit_priority or emit
        emit_plain = emit_high if on_priority_lane(priority, False) else emit
        emitted = 0
        for uid in d.members.members(msg.server_id):
            if uid == sender:
                suppressed.sender += 1
                continue
            user = users_get(uid)
            if user is None:
                skip((uid, UNKNOWN_USER))
                continue
            if not (user["is_admin"] or user["entitled"]):
                skip((uid, NOT_ENTITLED))
                continue
            mentioned = everyone or uid in mentions
            level = levels_get(uid + level_suffix)
            if level is not None:
                if level == "none":
                    skip((uid, CHANNEL_MUTED))
                    continue
                if level == "mentions" and not mentioned:
                    skip((uid, NOT_MENTIONED))
                    continue
            prefs = prefs_get(uid)
            channels = effective_channels(user, prefs)
            if not channels:
                skip((uid, NO_CHANNELS))
                continue
            nid = notification_id(source, uid)
            kind = "MENTION" if mentioned else "NEW_MESSAGE"
            value = orjson.dumps(
                {
                    "notification_id": nid,
                    "user_id": uid,
                    "type": kind,
                    **text.fields(kind, user.get("locale")),
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
            (emit_high if mentioned else emit_plain)(uid, nid, value)
            emitted += 1
        return emitted

    def announcement(
        self,
        ann: AnnouncementRequested,
        emit: Emit,
        suppressed: Suppressed,
        emit_priority: Emit | None = None,
    ) -> int:
        """Announcements go to every listed user, or every member of the server, that
        exists; entitlement and channel levels do not apply, channel toggles do. A critical
        or high-priority one goes to `emit_priority` when given (the priority lane)."""
        users_get = self.d.users.get
        prefs_get = self.d.user_prefs.get
        # Listed users are de-duplicated (the list is bounded by the schema); a server's
        # member set has no duplicates and is iterated in place.
        recipients: Iterable[str] = (
            dict.fromkeys(ann.user_ids)
            if ann.user_ids is not None
            else self.d.members.members(ann.server_id or "")
        )
        text = _Rendering(
            self.templates,
            {
                "announcement_id": ann.announcement_id,
                "server_id": ann.server_id,
                "title": ann.title,
                "body": ann.body,
                "action_url": ann.action_url,
            },
        )
        base = {
            "type": ann.type,
            "metadata": {
                "announcement_id": ann.announcement_id,
                "server_id": ann.server_id,
                "is_mentioned": False,
            },
            "priority": "high" if ann.critical else ann.priority,
            "critical": ann.critical,
            "created_at": ann.created_at.isoformat(),
        }
        skip = suppressed.users.append
        if emit_priority is not None and on_priority_lane(ann.priority, ann.critical):
            emit = emit_priority
        emitted = 0
        for uid in recipients:
            user = users_get(uid)
            if user is None:
                skip((uid, UNKNOWN_USER))
                continue
            prefs = prefs_get(uid)
            channels = effective_channels(user, prefs)
            if not channels:
                skip((uid, NO_CHANNELS))
                continue
            nid = notification_id(ann.announcement_id, uid)
            emit(
                uid,
                nid,
                orjson.dumps(
                    {
                        "notification_id": nid,
                        "user_id": uid,
                        **text.fields(ann.type, user.get("locale")),
                        "channels": channels,
                        "timezone": user.get("timezone"),
                        "quiet_hours": quiet_hours(user, prefs),
                        **base,
                    }
                ),
            )
            emitted += 1
        return emitted
