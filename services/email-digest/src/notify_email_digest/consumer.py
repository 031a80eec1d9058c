"""The consumers: notifications into email_items, and the directory topics into
email_recipients. Handlers know nothing of Kafka (the shared runner commits a batch's
offsets only after the handler returned, i.e. after its rows are committed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka import lanes
from notify_common.kafka.codec import PermanentError
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import ConsumerRunner, Received
from notify_email_digest import store
from notify_email_digest.context import utcnow
from notify_email_digest.events import DIRECTORY_GROUP, GROUP, SOURCE_OFFSET, SOURCE_PARTITION
from notify_email_digest.recipients import stored
from notify_email_digest.settings import EmailDigestSettings
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationCreated, User, UserPreferences

logger = log.get(__name__)

# PostgreSQL down: wait for it (the runner retries without dead-lettering anything).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    psycopg.OperationalError,
)


def is_critical(n: NotificationCreated, critical_types: list[str]) -> bool:
    return n.critical or n.type in critical_types


class AcceptNotifications:
    """notify.notifications.v1 → email_items: critical ones queued for immediate mail,
    the others held for the digest when the email channel applies to them."""

    def __init__(
        self,
        *,
        settings: EmailDigestSettings,
        engine: Engine,
        on_queued: Callable[[], None] = lambda: None,
        on_outbox: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.on_queued = on_queued
        self.on_outbox = on_outbox
        self.clock = clock

    def __call__(self, batch: list[Received]) -> None:
        items: list[store.NewItem] = []
        for r in batch:
            n = r.event
            if not isinstance(n, NotificationCreated):
                raise PermanentError(f"expected NotificationCreated, got {type(n).__name__}")
            critical = is_critical(n, self.settings.email_critical_types)
            # Critical mail is transactional: it does not depend on the email toggle (the
            # fanout only lists "email" in `channels` when the toggle is on).
            if not critical and "email" not in n.channels:
                continue
            headers = dict(r.headers)
            headers[SOURCE_PARTITION] = str(r.partition)
            headers[SOURCE_OFFSET] = str(r.offset)
            items.append(
                store.NewItem(
                    notification_id=n.notification_id,
                    user_id=n.user_id,
                    kind=store.IMMEDIATE if critical else store.DIGEST,
                    created_at=n.created_at,
                    event=r.message.value() or b"",
                    event_headers=headers,
                )
            )
        if not items:
            return
        added = store.add_items(self.engine, self.settings, items, now=self.clock())
        for i in items:
            # One line per notification, so a grep of the correlation id follows a message
            # through every service; ids only, never the content or the address.
            logger.info(
                "email item accepted",
                notification_id=str(i.notification_id),
                correlation_id=i.event_headers.get(envelope.CORRELATION_HEADER),
                kind=i.kind,
            )
        metrics.EMAIL_DEFERRED.labels(reason="digest").inc(added.held)
        if added.immediate:
            self.on_queued()
        if added.effects.outbox:
            self.on_outbox()


class ApplyDirectory:
    """notify.users.v1 and notify.user-preferences.v1 → email_recipients (tombstones
    clear the record)."""

    def __init__(self, *, settings: EmailDigestSettings, engine: Engine) -> None:
        self.engine = engine
        self.users_topic = settings.topic(topics.USERS)
        self.prefs_topic = settings.topic(topics.USER_PREFERENCES)

    def __call__(self, batch: list[Received]) -> None:
        changes: list[tuple[str, str, dict[str, Any] | None]] = []
        for r in batch:
            column = "user" if r.topic == self.users_topic else "prefs"
            if r.event is None:
                if not r.key:
                    raise PermanentError("tombstone without a key")
                changes.append((column, r.key, None))
            elif isinstance(r.event, User | UserPreferences):
                changes.append((column, r.event.user_id, stored(r.event)))
            else:
                raise PermanentError(f"unexpected {type(r.event).__name__} on {r.topic}")
        store.apply_directory(self.engine, changes)


def build_runner(
    settings: EmailDigestSettings,
    engine: Engine,
    *,
    producer: EventProducer,
    on_queued: Callable[[], None] = lambda: None,
    on_outbox: Callable[[], None] = lambda: None,
    lane: lanes.Lane = lanes.BULK,
) -> ConsumerRunner:
    """The consumer of one lane: notify.notifications.v1 (group notify-email-digest) or
    notify.notifications-priority.v1 (group notify-email-digest-priority), each its own
    runner, so critical mail is queued while a bulk backlog is still being read."""
    return ConsumerRunner(
        settings=settings,
        group=lanes.group_for(GROUP, lane),
        topics=[lanes.topic_for(lane)],
        handler=AcceptNotifications(
            settings=settings, engine=engine, on_queued=on_queued, on_outbox=on_outbox
        ),
        producer=producer,
        batch_size=settings.email_consumer_batch_size,
        unavailable=UNAVAILABLE,
    )


def build_directory_runner(
    settings: EmailDigestSettings, engine: Engine, *, producer: EventProducer
) -> ConsumerRunner:
    """The consumer of the compacted directory topics (group notify-email-digest-directory):
    its own group, so a notifications backlog never delays a user's address change."""
    return ConsumerRunner(
        settings=settings,
        group=DIRECTORY_GROUP,
        topics=[topics.USERS, topics.USER_PREFERENCES],
        handler=ApplyDirectory(settings=settings, engine=engine),
        producer=producer,
        batch_size=settings.email_consumer_batch_size,
        unavailable=UNAVAILABLE,
        allow_tombstones=True,
    )
