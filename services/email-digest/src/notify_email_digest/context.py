"""What the senders share: settings, database, clock, the outbox pump, the signing key, the
retry policy, and the metric updates that follow a transaction."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from notify_common import email_links, metrics
from notify_common import logging as log
from notify_email_digest import store
from notify_email_digest.outbox import OutboxPump
from notify_email_digest.recipients import Recipient, resolve
from notify_email_digest.render import Branding
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.smtp import Mailer

logger = log.get(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def instance_name() -> str:
    """Who holds a claim (for operators reading email_digests): host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Context:
    settings: EmailDigestSettings
    engine: Engine
    pump: OutboxPump
    clock: Callable[[], datetime] = utcnow
    instance: str = field(default_factory=instance_name)
    # Called (from any thread) when a transaction left rows in the outbox, or raised a
    # quota alert: wake the pump or the alert sender instead of waiting for their poll.
    on_outbox: Callable[[], None] = lambda: None
    on_alert: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.signing_key = email_links.SigningKey(self.engine)
        s = self.settings
        self.branding = Branding(
            name=s.email_brand_name,
            color=s.email_brand_color,
            app_url=s.email_app_url,
            center_url=s.email_center_url,
        )

    def mailer(self) -> Mailer:
        return Mailer(self.settings.smtp, timeout=self.settings.smtp_timeout_s)

    def recipient(
        self, user_id: str, records: tuple[dict[str, Any] | None, dict[str, Any] | None]
    ) -> Recipient:
        user, prefs = records
        return resolve(
            user_id=user_id,
            user=user,
            prefs=prefs,
            default_hour_utc=self.settings.digest_hour_utc,
        )

    def retry_delay(self, attempt: int) -> timedelta:
        """Capped exponential backoff with jitter ("equal jitter": at least half the step,
        so retries of one mail never bunch up at zero)."""
        s = self.settings
        step = min(s.email_retry_cap_s, s.email_retry_base_s * (2 ** max(0, attempt - 1)))
        return timedelta(seconds=step / 2 + random.uniform(0, step / 2))  # noqa: S311 - jitter

    def settle(self, effects: store.Effects) -> None:
        """After a commit: count the alerts it raised and wake the outbox pump."""
        for level in effects.alerts:
            metrics.EMAIL_QUOTA_ALERTS.labels(level=str(level)).inc()
            logger.warning("email quota alert raised", level=level)
        if effects.alerts:
            self.on_alert()
        if effects.outbox:
            self.on_outbox()

    def refresh_quota_gauges(self, now: datetime | None = None) -> None:
        limit = self.settings.email_daily_quota
        used = store.quota_used(self.engine, store.utc_day(now or self.clock()))
        metrics.EMAIL_QUOTA_USED.set(used)
        metrics.EMAIL_QUOTA_LIMIT.set(limit)
        metrics.EMAIL_QUOTA_REMAINING.set(max(0, limit - used))

    async def pump_outbox(self) -> None:
        """Publish what the outbox holds; failures are logged (the rows stay for later)."""
        try:
            await asyncio.to_thread(self.pump.drain)
        except Exception as exc:
            logger.warning("outbox publish failed, will retry", error=str(exc)[:300])
