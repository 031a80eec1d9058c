"""Pydantic models of every event on Notify's topics (version 1).

These models and the JSON Schemas under schemas/jsonschema/ describe the same contract;
tests/test_contract.py checks that they agree and that every example validates against both.
Within a version only optional fields may be added (a breaking change is a new topic version).

Inbound events (from upstream apps) are strict about unknown fields (`extra="forbid"`), so a
typo in an upstream producer is rejected with a reason instead of being silently ignored.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Identifiers are opaque strings chosen by the upstream app; "/" is reserved because
# composite Kafka keys ({server_id}/{user_id}) use it as the separator.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Priority = Literal["low", "normal", "high"]
ChannelName = Literal["in_app", "push", "email"]
PreferenceLevel = Literal["all", "mentions", "none"]
NotificationType = Literal["NEW_MESSAGE", "MENTION", "ADMIN_ANNOUNCEMENT", "SYSTEM"]
HourMinute = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]

MAX_CONTENT_CHARS = 8000
MAX_MENTIONS = 1000
MAX_ANNOUNCEMENT_USERS = 10_000


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageCreated(_Event):
    """A chat message was posted in a server channel (key: server_id)."""

    message_id: Id
    server_id: Id
    channel_id: Id
    sender_id: Id
    sender_name: Name
    content: Annotated[str, StringConstraints(max_length=MAX_CONTENT_CHARS)]
    mentions: list[Id] = Field(default_factory=list, max_length=MAX_MENTIONS)
    mention_everyone: bool = False
    created_at: datetime
    priority: Priority = "normal"
    server_name: Name | None = None
    channel_name: Name | None = None


class AnnouncementRequested(_Event):
    """An operator asked for an announcement to a user list or a whole server.

    Key: the server_id, or "global" when addressed to explicit user ids.
    """

    announcement_id: Id
    type: Literal["ADMIN_ANNOUNCEMENT", "SYSTEM"] = "ADMIN_ANNOUNCEMENT"
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    body: Annotated[str, StringConstraints(max_length=2000)]
    action_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    user_ids: list[Id] | None = Field(default=None, max_length=MAX_ANNOUNCEMENT_USERS)
    server_id: Id | None = None
    priority: Priority = "normal"
    critical: bool = False
    send_at: datetime | None = None
    created_at: datetime

    @model_validator(mode="after")
    def _one_audience(self) -> AnnouncementRequested:
        if (self.user_ids is None) == (self.server_id is None):
            raise ValueError("exactly one of user_ids or server_id is required")
        return self


class ChannelToggles(_Event):
    in_app: bool = True
    push: bool = True
    email: bool = True


class QuietHours(_Event):
    """A daily window in the user's timezone; start > end wraps over midnight."""

    start: HourMinute
    end: HourMinute


class DigestSettings(_Event):
    enabled: bool = True
    hour_local: int = Field(default=9, ge=0, le=23)


class User(_Event):
    """The latest state of a user (key: user_id; a tombstone means deleted)."""

    user_id: Id
    display_name: Name
    email: (
        Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    locale: Annotated[str, StringConstraints(min_length=2, max_length=35)] = "en"
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    is_admin: bool = False
    entitled: bool = False
    channels: ChannelToggles = Field(default_factory=ChannelToggles)
    quiet_hours: QuietHours | None = None
    digest: DigestSettings = Field(default_factory=DigestSettings)


class Membership(_Event):
    """A user's membership of a server (key: {server_id}/{user_id}).

    A tombstone or active=false means the user left.
    """

    server_id: Id
    user_id: Id
    role: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "member"
    active: bool = True
    server_name: Name | None = None


class ChannelPreference(_Event):
    """A user's notification level for one channel (key: {user_id}/{channel_id})."""

    user_id: Id
    channel_id: Id
    level: PreferenceLevel


class UserPreferences(_Event):
    """A user's own delivery preferences, set in the inbox (key: user_id).

    When present they override the delivery fields of the upstream User record; see
    docs/decisions/0002-user-preferences-topic.md.
    """

    user_id: Id
    channels: ChannelToggles = Field(default_factory=ChannelToggles)
    quiet_hours: QuietHours | None = None
    digest: DigestSettings = Field(default_factory=DigestSettings)


class NotificationMetadata(_Event):
    message_id: Id | None = None
    announcement_id: Id | None = None
    server_id: Id | None = None
    channel_id: Id | None = None
    sender_id: Id | None = None
    sender_name: Name | None = None
    is_mentioned: bool = False


class NotificationAction(_Event):
    """A button on the notification (push and email): opens `url` (a same-origin path) or
    performs `action`, an API action the app knows (see notify_common.templates)."""

    label: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    action: Literal["mark_read"] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> NotificationAction:
        if (self.url is None) == (self.action is None):
            raise ValueError("exactly one of url or action is required")
        return self


class NotificationCreated(_Event):
    """One notification for one recipient (key: user_id)."""

    notification_id: uuid.UUID
    user_id: Id
    type: NotificationType
    title: str
    body: str
    action_url: str | None = None
    metadata: NotificationMetadata
    priority: Priority
    critical: bool = False
    channels: list[ChannelName]
    created_at: datetime
    # The recipient's delivery context as the fanout saw it (their own preferences over the
    # upstream User record), so that a sender can honour quiet hours without a directory of
    # its own; see docs/decisions/0005-push-delivery.md. Absent from older producers.
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    quiet_hours: QuietHours | None = None
    # Rendered from the type's template with the title and body (absent from older
    # producers): at most two, as browsers show.
    actions: Annotated[list[NotificationAction], Field(max_length=2)] = []


class DeliveryRecorded(_Event):
    """The outcome of one delivery attempt of a notification on one channel (key: user_id)."""

    notification_id: uuid.UUID
    user_id: Id
    channel: ChannelName
    outcome: Literal["sent", "failed", "suppressed", "deferred", "deactivated"]
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    attempt: int = Field(ge=1)
    at: datetime
    # Web Push: which of the user's subscriptions this attempt went to (a user may have
    # several browsers, each with its own outcome). None on other channels.
    subscription_id: uuid.UUID | None = None


class FanoutCompleted(_Event):
    """The fanout finished expanding one source event (key: the message or announcement id).

    One per source event, emitted after its notifications; a replayed source event emits the
    same numbers again, so consumers upsert by `source_id`. `suppressed` counts the audience
    members who got no notification, by reason (e.g. "not_entitled", "muted", "sender").
    """

    source_id: Id
    kind: Literal["message", "announcement"]
    recipients: int = Field(ge=0)
    suppressed: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], int] = Field(
        default_factory=dict
    )
    at: datetime


class NotificationSuppressed(_Event):
    """The fanout decided not to notify one candidate of a source event (key: user_id).

    One per suppressed audience member, emitted with the source event's notifications (a
    replay re-emits the same records, so consumers upsert by (source_id, user_id)). The
    sender is never a candidate and has no record (FanoutCompleted counts it). `reason` is
    one of the fanout's reasons: unknown_user, not_entitled, channel_muted, not_mentioned,
    all_channels_off (a string, so that a new reason is not a new version).
    """

    source_id: Id
    kind: Literal["message", "announcement"]
    user_id: Id
    reason: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
    # None for an announcement to a list of users (no server) and for every announcement
    # (no channel).
    server_id: Id | None = None
    channel_id: Id | None = None
    at: datetime


class ReadStateChanged(_Event):
    """A user marked notifications read or unread in the inbox (key: user_id).

    Lets every open tab and device of the user show the same read state; see
    docs/decisions/0004-realtime-read-state.md. `scope` "one" names one notification,
    "all" is a mark-all-read of everything the user had at `changed_at`.
    """

    change_id: uuid.UUID
    user_id: Id
    scope: Literal["one", "all"]
    notification_id: uuid.UUID | None = None
    read: bool
    # The user's unread count right after the change, as the inbox's transaction saw it.
    unread_count: int = Field(ge=0)
    changed_at: datetime

    @model_validator(mode="after")
    def _scope_names_its_target(self) -> ReadStateChanged:
        if (self.scope == "one") != (self.notification_id is not None):
            raise ValueError('notification_id is required for scope "one" and only for it')
        if self.scope == "all" and not self.read:
            raise ValueError('scope "all" only marks read')
        return self


# notification_id = uuid5(NOTIFICATION_NAMESPACE, f"{source_event_id}:{user_id}") so that
# reprocessing the same source event always yields the same ids (idempotent downstream).
NOTIFICATION_NAMESPACE = uuid.UUID("6f1c7b52-3f7e-5a53-9a55-6e6f74696679")


def notification_id_for(source_event_id: str, user_id: str) -> uuid.UUID:
    return uuid.uuid5(NOTIFICATION_NAMESPACE, f"{source_event_id}:{user_id}")
