"""The consumer side: notify.notifications.v1 → queued pushes.

For each notification with "push" among its channels, one push per active subscription of
the user is queued in push_deliveries (the idempotency record: a redelivered notification
queues nothing). Decisions that need no network are taken here and reported at once: a
non-urgent push inside the user's quiet hours is held until the window ends (deferred), or
dropped (suppressed) when its TTL would run out first. The dispatcher sends the rest.

Pushes to send now are handed straight to the dispatcher of this process (inserted as
already claimed, with a lease) while it has room; otherwise they wait in the table for its
next claim. Either way the row is committed before anything is sent.

The runner commits the batch's offsets after this handler returns, i.e. after the pushes
are durably queued and the decisions' events confirmed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka import lanes
from notify_common.kafka.codec import PermanentError
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import ConsumerRunner, Received
from notify_push_sender import message, store
from notify_push_sender.events import (
    GROUP,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    Publisher,
    delivery,
)
from notify_push_sender.settings import PushSenderSettings
from notify_schemas.models import NotificationCreated

logger = log.get(__name__)

UNAVAILABLE: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    psycopg.OperationalError,
)
DEFERRED = "deferred"
SUPPRESSED = "suppressed"


def _now() -> datetime:
    return datetime.now(UTC)


class Sender(Protocol):
    """The dispatcher, as the consumer sees it."""

    def room(self, origin: str) -> int: ...

    def submit(self, jobs: list[store.Job]) -> None: ...

    def wake(self) -> None: ...


class QueuePushes:
    """The handler: a batch of NotificationCreated → rows in push_deliveries."""

    def __init__(
        self,
        *,
        settings: PushSenderSettings,
        engine: Engine,
        publisher: Publisher,
        sender: Sender | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.publisher = publisher
        self.sender = sender
        self.clock = clock

    def __call__(self, batch: list[Received]) -> None:
        wanted: list[tuple[Received, NotificationCreated]] = []
        for item in batch:
            if not isinstance(item.event, NotificationCreated):
                raise PermanentError(f"expected NotificationCreated, got {type(item.event)}")
            if "push" in item.event.channels:
                wanted.append((item, item.event))
        if not wanted:
            return
        subscriptions: dict[str, list[store.Subscription]] = {}
        for sub in store.active_subscriptions(self.engine, sorted({n.user_id for _, n in wanted})):
            subscriptions.setdefault(sub.user_id, []).append(sub)

        now = self.clock()
        pushes: dict[tuple[uuid.UUID, uuid.UUID], store.NewPush] = {}
        targets: dict[uuid.UUID, store.Subscription] = {}
        unreachable: dict[uuid.UUID, NotificationCreated] = {}
        lease = timedelta(seconds=self.settings.push_lease_s)
        room: dict[str, int] = {}  # hand-off slots left per origin in this batch
        for item, n in wanted:
            subs = subscriptions.get(n.user_id)
            if not subs:
                unreachable[n.notification_id] = n
                continue
            for push, sub in zip(self._plan(item, n, subs, now), subs, strict=True):
                if push.outcome is None and self.sender is not None:
                    if sub.origin not in room:
                        room[sub.origin] = self.sender.room(sub.origin)
                    if room[sub.origin] > 0:
                        room[sub.origin] -= 1
                        push.state, push.not_before = store.INFLIGHT, now + lease
                        push.attempts = 1
                # A notification repeated within one batch is queued once.
                pushes[(push.notification_id, push.subscription_id)] = push
                targets[sub.id] = sub

        queued = store.queue(self.engine, list(pushes.values()))
        fresh = {(q.notification_id, q.subscription_id): q for q in queued}
        for item, n in wanted:
            # One line per notification, so a grep of the correlation id follows a message
            # through every service; ids and counts only, never the content.
            logger.info(
                "push queued",
                notification_id=str(n.notification_id),
                correlation_id=item.correlation_id,
                subscriptions=len(subscriptions.get(n.user_id, ())),
            )
        reported: list[int] = []
        handed: list[store.Job] = []
        for key, push in pushes.items():
            q = fresh.get(key)
            if q is None:
                metrics.PUSH_QUEUED.labels(disposition="duplicate").inc()
                continue
            if push.outcome is None:
                metrics.PUSH_QUEUED.labels(disposition="now").inc()
                if q.state == store.INFLIGHT:
                    handed.append(_job(q.id, push, targets[push.subscription_id]))
                continue
            metrics.PUSH_QUEUED.labels(
                disposition="held" if push.outcome == DEFERRED else "dropped"
            ).inc()
            self.publisher.delivery(
                user_id=push.user_id,
                value=delivery(
                    notification_id=push.notification_id,
                    user_id=push.user_id,
                    subscription_id=push.subscription_id,
                    outcome=push.outcome,
                    reason=push.reason,
                    attempt=1,
                    at=now,
                ),
                correlation_id=push.event_headers.get("ce_correlationid"),
            )
            reported.append(q.id)
        if self.sender is not None:
            # Committed: sending may start while the decisions' events are confirmed.
            if handed:
                self.sender.submit(handed)
            if len(fresh) > len(reported) + len(handed):
                self.sender.wake()  # pushes queued for its next claim
        for n in unreachable.values():
            self.publisher.delivery(
                user_id=n.user_id,
                value=delivery(
                    notification_id=n.notification_id,
                    user_id=n.user_id,
                    subscription_id=None,
                    outcome=SUPPRESSED,
                    reason="no active push subscription",
                    attempt=1,
                    at=now,
                ),
            )
        self.publisher.flush()
        store.events_published(self.engine, reported)

    def _plan(
        self,
        item: Received,
        n: NotificationCreated,
        subs: list[store.Subscription],
        now: datetime,
    ) -> list[store.NewPush]:
        s = self.settings
        content = message.content(n, icon=s.push_icon, badge=s.push_badge, url_base=s.push_url_base)
        if content.trimmed:
            metrics.PUSH_TRIMMED.inc()
        ttl = s.ttl_for(n.type)
        expires = n.created_at + timedelta(seconds=ttl)
        state, not_before, outcome, reason = store.QUEUED, now, None, None
        if expires <= now:
            state, outcome = store.DROPPED, SUPPRESSED
            reason = f"TTL ({ttl} s) expired before the push could be sent"
        elif content.urgency in ("normal", "low"):
            until = message.quiet_until(n.quiet_hours, n.timezone, now)
            if until is not None and until >= expires:
                # Held past its TTL it would be stale: the push service would drop it too.
                # The notification stays in the feed; the push is not sent.
                state, outcome = store.DROPPED, SUPPRESSED
                reason = f"quiet hours until {until.isoformat()}; the push expires first"
            elif until is not None:
                not_before, outcome = until, DEFERRED
                reason = f"quiet hours until {until.isoformat()}"
        headers = dict(item.headers)
        headers[SOURCE_PARTITION] = str(item.partition)
        headers[SOURCE_OFFSET] = str(item.offset)
        value = item.message.value() or b""
        return [
            store.NewPush(
                notification_id=n.notification_id,
                subscription_id=sub.id,
                user_id=n.user_id,
                origin=sub.origin,
                state=state,
                not_before=not_before,
                payload=content.payload,
                ttl_s=ttl,
                urgency=content.urgency,
                topic=content.topic,
                expires_at=expires,
                event=value,
                event_headers=headers,
                outcome=outcome,
                reason=reason,
                # A held or dropped push reports its decision as attempt 1.
                attempts=0 if outcome is None else 1,
            )
            for sub in subs
        ]


def _job(row_id: int, push: store.NewPush, sub: store.Subscription) -> store.Job:
    return store.Job(
        id=row_id,
        notification_id=push.notification_id,
        user_id=push.user_id,
        subscription_id=sub.id,
        attempt=1,
        origin=sub.origin,
        payload=push.payload,
        ttl_s=push.ttl_s,
        urgency=push.urgency,
        topic=push.topic,
        expires_at=push.expires_at,
        endpoint=sub.endpoint,
        p256dh=sub.p256dh,
        auth=sub.auth,
        application_server_key=sub.application_server_key,
        usable=True,
    )


def build_runner(
    settings: PushSenderSettings,
    engine: Engine,
    *,
    producer: EventProducer,
    sender: Sender | None = None,
    lane: lanes.Lane = lanes.BULK,
) -> ConsumerRunner:
    """The consumer of one lane: notify.notifications.v1 (group notify-push-sender) or
    notify.notifications-priority.v1 (group notify-push-sender-priority); each lane has its
    own runner (and producer), so a bulk backlog never delays the priority lane."""
    handler = QueuePushes(
        settings=settings,
        engine=engine,
        publisher=Publisher(settings, producer),
        sender=sender,
    )
    return ConsumerRunner(
        settings=settings,
        group=lanes.group_for(GROUP, lane),
        topics=[lanes.topic_for(lane)],
        handler=handler,
        producer=producer,
        batch_size=settings.push_consumer_batch_size,
        unavailable=UNAVAILABLE,
    )
