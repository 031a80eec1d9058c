"""The tables Notify owns. Changed only together with an Alembic migration
(tests run `alembic check`, which fails while the models and migrations disagree)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Notification(Base):
    """One row per notification_id: the in-app feed."""

    __tablename__ = "notifications"

    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Feed order and cursor: assigned at insert, so a page boundary never moves when newer
    # notifications arrive, whatever their created_at says.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    user_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    action_url: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    priority: Mapped[str] = mapped_column(Text)
    critical: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    channels: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    inserted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_notifications_user_feed", "user_id", text("seq DESC")),
        Index(
            "ix_notifications_user_unread",
            "user_id",
            text("seq DESC"),
            postgresql_where=text("read_at IS NULL"),
        ),
    )


class ChannelPreferenceRow(Base):
    __tablename__ = "channel_preferences"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    channel_id: Mapped[str] = mapped_column(Text, primary_key=True)
    level: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserPreferencesRow(Base):
    __tablename__ = "user_preferences"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    channels: Mapped[dict[str, Any]] = mapped_column(JSONB)
    quiet_hours: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    digest: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OutboxRow(Base):
    """Events written in the same transaction as the state they describe; a relay publishes
    them in id order and marks them published (transactional outbox)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )


class PushSubscriptionRow(Base):
    """A browser's Web Push subscription (PushSubscription JSON), owned by one user.

    The endpoint is unique: re-subscribing the same endpoint updates the row (new keys, or a
    new owner when another user signs in on that browser) instead of adding one.
    """

    __tablename__ = "push_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    endpoint: Mapped[str] = mapped_column(Text, unique=True)
    # scheme://host[:port]: the VAPID audience and the unit of per-push-service limits.
    origin: Mapped[str] = mapped_column(Text)
    p256dh: Mapped[str] = mapped_column(Text)
    auth: Mapped[str] = mapped_column(Text)
    # The VAPID public key the browser subscribed with: push services bind a subscription to
    # it, so push-sender signs with the matching key during a key rotation.
    application_server_key: Mapped[str | None] = mapped_column(Text)
    device_info: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    expiration_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Consecutive permanent failures (reset by a success); 5 or more and it is not used.
    failure_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_active: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deactivated_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_push_subscriptions_user", "user_id", "is_active"),)


class PushDeliveryRow(Base):
    """One push of one notification to one subscription: push-sender's work queue and its
    idempotency record at once.

    The unique (notification_id, subscription_id) pair is the idempotency key: a redelivered
    notification finds its rows and queues nothing. `state` is queued (due at not_before),
    inflight (claimed; not_before is the lease expiry, after which another claim may take
    it), or terminal: sent, gone (404/410), failed, dead (retries exhausted, dead-lettered;
    a requeued notification may revive it), dropped (never sent: TTL, inactive subscription).
    """

    __tablename__ = "push_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("push_subscriptions.id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The plaintext push message (JSON) and its headers; cleared once the row is terminal.
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    ttl_s: Mapped[int] = mapped_column(Integer)
    urgency: Mapped[str] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(Text)
    # created_at of the notification + TTL: a push not sent by then is dropped.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The notification as consumed (value and CloudEvents headers), dead-lettered as is when
    # retries run out; cleared once the row is terminal.
    event: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_outcome: Mapped[str | None] = mapped_column(Text)
    last_reason: Mapped[str | None] = mapped_column(Text)
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last outcome is recorded here but its DeliveryRecorded event is not confirmed on
    # Kafka yet (published again after a crash).
    event_pending: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("notification_id", "subscription_id"),
        Index(
            "ix_push_deliveries_due",
            "not_before",
            postgresql_where=text("state IN ('queued', 'inflight')"),
        ),
        # The priority lane's due pushes, claimed first (0010-priority-lanes.md).
        Index(
            "ix_push_deliveries_due_high",
            "not_before",
            postgresql_where=text("state IN ('queued', 'inflight') AND urgency = 'high'"),
        ),
        Index("ix_push_deliveries_subscription", "subscription_id"),
        Index("ix_push_deliveries_created", "created_at"),
        Index("ix_push_deliveries_event_pending", "id", postgresql_where=text("event_pending")),
    )


# --- email-digest -------------------------------------------------------------------------
# The tables below belong to email-digest (docs/decisions/0006-email-digest.md), except
# email_signing_keys, which the inbox reads too (it verifies the unsubscribe tokens
# email-digest signs) and email_recipients, which the inbox reads when an unsubscribing user
# has no preferences of their own yet.


class EmailRecipientRow(Base):
    """email-digest's view of the directory: the latest User record (notify.users.v1) and
    the user's own UserPreferences (notify.user-preferences.v1) of each user, as JSON with
    only the fields their producer set (so "hour not given" stays distinguishable from 9).
    A null column is an absent or deleted (tombstoned) record."""

    __tablename__ = "email_recipients"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    prefs: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EmailDigestRow(Base):
    """One user's digest of one day (the user's local date of the digest hour): the claim
    that makes the daily digest exactly-once across replicas.

    `state`: claimed (a sender holds it until lease_until; an expired lease means the sender
    died and another may take it over), retry (a temporary SMTP failure; due again at
    next_attempt_at), sent, deferred (no quota left: its notifications wait for the next
    day's digest), failed (5xx) or dead (temporary failures exhausted the attempts).
    """

    __tablename__ = "email_digests"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    digest_day: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The UTC day whose quota this digest holds a unit of (None: none held). Kept across
    # retries so a retried digest is counted once; given back when it finally fails.
    quota_day: Mapped[date | None] = mapped_column(Date)
    item_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    message_id: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("user_id", "digest_day"),
        Index(
            "ix_email_digests_open",
            "state",
            postgresql_where=text("state IN ('claimed', 'retry')"),
        ),
    )


class EmailItemRow(Base):
    """One notification on the email channel: the immediate-mail queue, the digest's
    accumulation and the idempotency record of each notification at once.

    `kind` immediate (critical) or digest. `state`: queued (immediate, due at not_before),
    sending (claimed; not_before is the lease expiry), pending (waiting for the user's next
    digest), digesting (in the digest digest_id being sent), or final: sent, suppressed,
    failed (5xx) and dead (temporary failures exhausted the attempts; both dead-lettered).
    """

    __tablename__ = "email_items"

    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    digest_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("email_digests.id", ondelete="SET NULL")
    )
    # Immediate mail: the UTC day whose quota counted it (counted once, whatever the retries).
    quota_day: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The notification as consumed (value and CloudEvents headers): rendered into the mail
    # and dead-lettered as is; cleared once the row is final.
    event: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index(
            "ix_email_items_due",
            "not_before",
            postgresql_where=text("state IN ('queued', 'sending')"),
        ),
        Index("ix_email_items_pending", "user_id", postgresql_where=text("state = 'pending'")),
        Index("ix_email_items_digest", "digest_id"),
        Index("ix_email_items_updated", "updated_at"),
    )


class EmailQuotaDayRow(Base):
    """The global email quota of one UTC day, and its audit snapshot: rows are kept.

    `used` counts every mail sent or being sent that day (critical mail too, which never
    waits for it); a digest reserves its unit before it is sent, with an atomic
    check-and-increment on this row, so replicas never overspend.
    """

    __tablename__ = "email_quota_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    quota_limit: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Of `used`: critical mail, which bypasses the limit.
    immediate: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Digests that found no quota left (deferred to the next day's digest).
    deferred: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Units given back by mail that finally failed (the provider never accepted it).
    refunded: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EmailQuotaAlertRow(Base):
    """A quota level (80, 90, 100 %) reached on a day: inserted once per level and day by
    the increment that reached it, then delivered to the webhook (at least once)."""

    __tablename__ = "email_quota_alerts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    used: Mapped[int] = mapped_column(Integer)
    quota_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class EmailRateWindowRow(Base):
    """Immediate mails sent to one user in one clock hour (the per-user rate limit)."""

    __tablename__ = "email_rate_windows"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    sent: Mapped[int] = mapped_column(Integer)


class EmailOutboxRow(Base):
    """Events email-digest must publish (DeliveryRecorded, dead letters), written in the
    transaction that records the state they describe; published and deleted after the
    broker confirmed them (at least once)."""

    __tablename__ = "email_outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EmailSigningKeyRow(Base):
    """The HMAC key of unsubscribe links, created on first use by whichever of email-digest
    (signs) and the inbox (verifies) needs it first; see docs/decisions/0006."""

    __tablename__ = "email_signing_keys"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- Admin: dead letters, fanout results, delivery outcomes (migration 0004_admin) ---------

# Message status looks notifications up by their source message or announcement (JSONB
# metadata), and the stats count recent inserts.
Index("ix_notifications_message_id", Notification.meta["message_id"].astext)
Index("ix_notifications_announcement_id", Notification.meta["announcement_id"].astext)
Index("ix_notifications_inserted_at", Notification.inserted_at)


class DlqEntryRow(Base):
    """One dead-lettered record read from notify.dlq.v1 (any consumer's), for the admin API.

    Unique on where the original came from (topic, partition, offset, consumer group): a
    redelivered DLQ record, or the same record dead-lettered twice by one group, is one
    entry. `requeue_count` > 0 once the original was republished to its topic.
    """

    __tablename__ = "dlq_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    original_topic: Mapped[str] = mapped_column(Text)
    original_partition: Mapped[int] = mapped_column(Integer)
    original_offset: Mapped[int] = mapped_column(BigInteger)
    consumer_group: Mapped[str] = mapped_column(Text)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The original's headers (dlq_* ones excluded) as text: CloudEvents binary-mode headers
    # are text; anything else is stored with replacement characters.
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    error_class: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Where the dead letter itself sits on notify.dlq.v1.
    dlq_partition: Mapped[int] = mapped_column(Integer)
    dlq_offset: Mapped[int] = mapped_column(BigInteger)
    dead_lettered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requeue_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (
        UniqueConstraint(
            "original_topic",
            "original_partition",
            "original_offset",
            "consumer_group",
            name="uq_dlq_entries_origin",
        ),
    )


class FanoutResultRow(Base):
    """The fanout's summary of one source event (notify.fanout-results.v1), latest wins."""

    __tablename__ = "fanout_results"

    source_id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # message | announcement
    recipients: Mapped[int] = mapped_column(Integer)
    suppressed: Mapped[dict[str, int]] = mapped_column(JSONB)  # reason -> count
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class DeliveryOutcomeRow(Base):
    """The latest outcome of a notification on one channel (notify.deliveries.v1)."""

    __tablename__ = "delivery_outcomes"

    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    channel: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class RateLimitRow(Base):
    """One fixed-window request counter per key ("user:<id>", "service:<name>"), shared by
    every replica (notify_common.ratelimit). A row whose window has ended is only reused or
    swept: it says nothing any more."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    hits: Mapped[int] = mapped_column(Integer)


class SuppressionRow(Base):
    """The suppression log: one decision not to notify someone, with its reason.

    `channel` "*" is the fanout's decision (no notification at all; notify.suppressions.v1);
    a channel name is a sender's decision about one notification on that channel (held or
    dropped: outcome suppressed or deferred on notify.deliveries.v1), the latest one kept.
    One row per (notification_id, channel): notification_id = uuid5(source_id, user_id), so
    one per (source, user, channel) however often a record is redelivered or replayed.
    `source_id` is known for the fanout's rows; a channel's row finds it through its
    notification. Rows older than NOTIFY_SUPPRESSION_RETENTION_DAYS are deleted.
    """

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    channel: Mapped[str] = mapped_column(Text)  # "*" | in_app | push | email
    user_id: Mapped[str] = mapped_column(Text)
    source_id: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(Text)  # message | announcement
    server_id: Mapped[str | None] = mapped_column(Text)
    channel_id: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)  # suppressed | deferred
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (
        UniqueConstraint("notification_id", "channel", name="uq_suppressions_decision"),
        # A user's log, newest first (keyset pagination on (at, id)).
        Index("ix_suppressions_user_id_at_id", "user_id", "at", "id"),
        Index("ix_suppressions_source_id", "source_id"),
    )


# --- ingest: scheduled announcements --------------------------------------------------------


class ScheduledAnnouncementRow(Base):
    """An announcement with a future send_at, held until then (notify_ingest.schedule).

    `state`: scheduled (waiting), released (published to notify.announcement-requested.v1),
    cancelled (by DELETE /v1/announcements/{id} before send_at). `event` is the
    AnnouncementRequested as accepted; it is published unchanged, with the event id ingest
    gives every announcement, so a release repeated after a crash is the same event."""

    __tablename__ = "scheduled_announcements"

    announcement_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event: Mapped[dict[str, Any]] = mapped_column(JSONB)
    kafka_key: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(Text)
    send_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_scheduled_announcements_due",
            "send_at",
            postgresql_where=text("state = 'scheduled'"),
        ),
    )
