"""Immediate mail: critical notifications, sent as soon as they are queued.

Each mail is claimed (a lease), admitted (the user's hourly limit: over it, the mail is
folded into the digest; the day's quota: counted, never refused), sent, and its outcome
recorded with its event. Temporary SMTP failures are retried with capped backoff and
jitter until `email_max_attempts`, then the mail is dead-lettered; a 5xx reply fails and
dead-letters it at once. Critical mail is transactional: it carries no unsubscribe header
and goes to every user with an address, whatever their digest and email toggles say.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from pydantic import ValidationError

from notify_common import logging as log
from notify_common import metrics
from notify_email_digest import compose, render, store
from notify_email_digest.context import Context
from notify_email_digest.events import SENT, SUPPRESSED
from notify_email_digest.recipients import Recipient
from notify_email_digest.smtp import Mailer, SendError
from notify_schemas.models import NotificationCreated

logger = log.get(__name__)

KIND = store.IMMEDIATE
_CLAIM_BATCH = 20


class ImmediateSender:
    def __init__(self, ctx: Context, mailer: Mailer | None = None) -> None:
        self.ctx = ctx
        self.mailer = mailer or ctx.mailer()

    async def send_due(self) -> int:
        """Claim and send what is due now; return how many were claimed."""
        ctx, s = self.ctx, self.ctx.settings
        items = await asyncio.to_thread(
            store.claim_immediate,
            ctx.engine,
            now=ctx.clock(),
            lease_s=s.email_lease_s,
            limit=_CLAIM_BATCH,
        )
        if not items:
            return 0
        records = await asyncio.to_thread(
            store.load_recipients, ctx.engine, [i.user_id for i in items]
        )
        for item in items:
            await self._one(
                item, ctx.recipient(item.user_id, records.get(item.user_id, (None, None)))
            )
        return len(items)

    async def next_due(self) -> datetime | None:
        return await asyncio.to_thread(store.next_immediate_due, self.ctx.engine)

    async def close(self) -> None:
        await self.mailer.close()

    async def _finish(
        self,
        item: store.Item,
        outcome: str,
        reason: str | None,
        retry_at: datetime | None = None,
    ) -> None:
        ctx = self.ctx
        effects = await asyncio.to_thread(
            store.finish_immediate,
            ctx.engine,
            ctx.settings,
            item,
            outcome=outcome,
            reason=reason,
            now=ctx.clock(),
            retry_at=retry_at,
        )
        ctx.settle(effects)

    async def _one(self, item: store.Item, recipient: Recipient) -> None:
        ctx, s = self.ctx, self.ctx.settings
        now = ctx.clock()
        if not recipient.known:
            waited = (now - item.received_at).total_seconds()
            if waited < s.email_unknown_user_grace_s:
                # The User record may still be on its way to our directory view.
                retry_at = now + timedelta(seconds=min(5.0, s.email_unknown_user_grace_s))
                await asyncio.to_thread(store.requeue_unknown, ctx.engine, item, retry_at=retry_at)
                return
            metrics.EMAIL_SUPPRESSED.labels(reason="unknown_user").inc()
            await self._finish(item, SUPPRESSED, "unknown user: no User record")
            return
        if not recipient.email:
            metrics.EMAIL_SUPPRESSED.labels(reason="no_address").inc()
            await self._finish(item, SUPPRESSED, "the user has no email address")
            return
        try:
            notification = NotificationCreated.model_validate_json(item.event)
        except ValidationError as exc:  # it was valid when consumed: only a bug gets here
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="permanent").inc()
            await self._finish(item, store.FAILED, f"stored notification unreadable: {exc}")
            return

        admission = await asyncio.to_thread(
            store.admit_immediate,
            ctx.engine,
            s,
            item,
            now=now,
            rate_limit=s.email_rate_limit_per_hour,
            quota_limit=s.email_daily_quota,
        )
        ctx.settle(admission.effects)
        if admission.action == "fold":
            metrics.EMAIL_DEFERRED.labels(reason="rate_limit").inc()
            return
        if admission.action != "send":
            return
        if admission.quota_used is not None:
            metrics.EMAIL_QUOTA_CONSUMED.labels(kind=KIND).inc()

        rendered = render.render_single(
            notification,
            locale=recipient.locale,
            default_locale=s.email_default_locale,
            tz=recipient.timezone,
            brand=ctx.branding,
        )
        try:
            message = compose.build(
                subject=rendered.subject,
                sender_name=s.from_name,
                sender_address=s.from_address,
                to_name=recipient.display_name,
                to_address=recipient.email,
                text=rendered.text,
                html=rendered.html,
                msg_id=compose.message_id(str(item.notification_id), s.mail_domain),
                date=now,
                unsubscribe=None,
            )
        except (ValueError, TypeError) as exc:
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="permanent").inc()
            await self._finish(item, store.FAILED, f"cannot address the mail: {exc}")
            return
        try:
            await self.mailer.send(
                compose.to_bytes(message), sender=s.from_address, recipient=recipient.email
            )
        except SendError as err:
            await self._failed(item, err)
            return
        metrics.EMAIL_SENT.labels(kind=KIND).inc()
        await self._finish(item, SENT, None)
        logger.info(
            "critical email sent",
            notification_id=str(item.notification_id),
            attempt=item.attempts,
            correlation_id=item.correlation_id,
        )

    async def _failed(self, item: store.Item, err: SendError) -> None:
        ctx, s = self.ctx, self.ctx.settings
        if err.temporary and item.attempts < s.email_max_attempts:
            metrics.EMAIL_RETRIES.labels(kind=KIND, status_class=err.status_class).inc()
            retry_at = ctx.clock() + ctx.retry_delay(item.attempts)
            logger.warning(
                "email not accepted, will retry",
                notification_id=str(item.notification_id),
                attempt=item.attempts,
                reason=err.reason,
                retry_at=retry_at.isoformat(),
            )
            await self._finish(item, "retry", err.reason, retry_at=retry_at)
            return
        if err.temporary:
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="exhausted").inc()
            reason = f"gave up after {item.attempts} attempts: {err.reason}"
            await self._finish(item, store.DEAD, reason)
        else:
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="permanent").inc()
            await self._finish(item, store.FAILED, err.reason)
        logger.warning(
            "email failed, dead-lettered",
            notification_id=str(item.notification_id),
            attempt=item.attempts,
            reason=err.reason,
        )
