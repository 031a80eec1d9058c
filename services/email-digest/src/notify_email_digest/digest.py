"""The daily digest: one mail per user per day, at the user's digest hour.

A run (`DigestRun.run(now)`) looks at every user with notifications waiting and sends the
digest of each user whose digest time has come (recipients.Recipient.digest_slot) and who
has something received before it. `now` is a parameter, so tests and operators drive it
with any clock (`notify-email-digest run-digest --now …`); the service's scheduler calls it
every NOTIFY_DIGEST_POLL_INTERVAL_S with the real time.

Exactly once per user and day, across replicas: the digest is claimed (the unique row of
email_digests) before it is sent and recorded as sent after the SMTP server accepted it.
A replica that dies in between leaves a claim whose lease expires, and the next run sends
that digest again. If it died after the server accepted the mail but before recording it,
the user gets that digest twice (the crash window, docs/email.md); the duplicate carries
the same Message-ID. The other order (record first, then send) would lose the digest in
the same window, and a lost digest is worse for the user than a repeated one.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from notify_common import email_links, metrics
from notify_common import logging as log
from notify_email_digest import compose, render, store
from notify_email_digest.context import Context
from notify_email_digest.events import SENT
from notify_email_digest.recipients import Recipient
from notify_email_digest.smtp import Mailer, SendError
from notify_schemas.models import NotificationCreated

logger = log.get(__name__)

KIND = store.DIGEST


@dataclass
class RunSummary:
    sent: int = 0
    deferred: int = 0  # digests with no quota left
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0  # notifications of users who get no digest
    skipped: int = 0  # claimed by another replica, or nothing due yet
    users: list[str] = field(default_factory=list)  # users whose digest was sent

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "deferred": self.deferred,
            "retrying": self.retrying,
            "failed": self.failed,
            "suppressed": self.suppressed,
            "skipped": self.skipped,
        }


class DigestRun:
    def __init__(self, ctx: Context, mailer: Mailer | None = None) -> None:
        self.ctx = ctx
        self.mailer = mailer or ctx.mailer()

    async def close(self) -> None:
        await self.mailer.close()

    async def run(self, now: datetime | None = None) -> RunSummary:
        """Send every digest due at `now` (default: the context's clock)."""
        ctx = self.ctx
        now = now or ctx.clock()
        summary = RunSummary()
        pending, open_ = await asyncio.to_thread(store.digest_candidates, ctx.engine, now=now)
        # Replicas running at once start at different users, so they mostly claim different
        # digests instead of queueing on the same rows.
        random.shuffle(pending)
        random.shuffle(open_)
        resumed: set[tuple[str, date]] = set()
        for d in open_:
            recipient = ctx.recipient(d.user_id, (d.user, d.prefs))
            resumed.add((d.user_id, d.digest_day))
            await self._digest(recipient, d.digest_day, now, summary)
        for p in pending:
            recipient = ctx.recipient(p.user_id, (p.user, p.prefs))
            reason = recipient.suppression()
            if reason is not None:
                await self._suppress(recipient, reason, now, summary)
                continue
            day, at = recipient.digest_slot(now)
            if p.oldest > at or (p.user_id, day) in resumed:
                # Everything waiting arrived after today's digest time: tomorrow's digest.
                summary.skipped += 1
                continue
            if p.settled_day is not None and p.settled_day >= day:
                # Today's digest went out (or was deferred) already: these wait for tomorrow.
                summary.skipped += 1
                continue
            await self._digest(recipient, day, now, summary)
        await ctx.pump_outbox()
        metrics.EMAIL_DIGEST_RUNS.labels(result="ok").inc()
        if summary.sent or summary.deferred or summary.failed:
            logger.info("digest run", now=now.isoformat(), **summary.as_dict())
        return summary

    async def _suppress(
        self, recipient: Recipient, reason: str, now: datetime, summary: RunSummary
    ) -> None:
        ctx = self.ctx
        count, effects = await asyncio.to_thread(
            store.suppress_pending,
            ctx.engine,
            ctx.settings,
            user_id=recipient.user_id,
            reason=_SUPPRESSION_REASONS[reason],
            now=now,
        )
        ctx.settle(effects)
        metrics.EMAIL_SUPPRESSED.labels(reason=reason).inc(count)
        summary.suppressed += count

    async def _digest(
        self, recipient: Recipient, day: date, now: datetime, summary: RunSummary
    ) -> None:
        ctx, s = self.ctx, self.ctx.settings
        claim = await asyncio.to_thread(
            store.claim_digest,
            ctx.engine,
            s,
            user_id=recipient.user_id,
            digest_day=day,
            now=now,
            lease_s=s.email_lease_s,
            quota_limit=s.email_daily_quota,
            instance=ctx.instance,
        )
        ctx.settle(claim.effects)
        if claim.status == "deferred":
            summary.deferred += 1
            metrics.EMAIL_DEFERRED.labels(reason="quota").inc()
            logger.info("digest deferred: daily quota exhausted", user_id=recipient.user_id)
            return
        if claim.status != "claimed":
            summary.skipped += 1
            return
        if claim.quota_used is not None:
            metrics.EMAIL_QUOTA_CONSUMED.labels(kind=KIND).inc()
        if not recipient.email:
            # Resumed after the user lost their address (or record) since the claim.
            await self._finish(recipient, claim, store.FAILED, "the user has no email address")
            summary.failed += 1
            return
        try:
            message = self._message(recipient, claim, now)
        except (ValidationError, ValueError, TypeError) as exc:
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="permanent").inc()
            await self._finish(recipient, claim, store.FAILED, f"cannot build the digest: {exc}")
            summary.failed += 1
            return
        try:
            await self.mailer.send(
                compose.to_bytes(message), sender=s.from_address, recipient=recipient.email
            )
        except SendError as err:
            await self._failed(recipient, claim, err, summary)
            return
        metrics.EMAIL_SENT.labels(kind=KIND).inc()
        await self._finish(recipient, claim, SENT, None, message_id=message["Message-ID"])
        summary.sent += 1
        summary.users.append(recipient.user_id)

    def _message(self, recipient: Recipient, claim: store.DigestClaim, now: datetime) -> Any:
        ctx, s = self.ctx, self.ctx.settings
        assert recipient.email is not None
        notifications = [NotificationCreated.model_validate_json(i.event) for i in claim.items]
        unsubscribe = compose.Unsubscribe.build(
            base_url=s.email_unsubscribe_url,
            mailto_address=s.email_unsubscribe_mailto or s.from_address,
            key=ctx.signing_key.get(),
            user_id=recipient.user_id,
            list_id=email_links.DIGEST_LIST,
        )
        rendered = render.render_digest(
            notifications,
            name=recipient.display_name,
            locale=recipient.locale,
            default_locale=s.email_default_locale,
            tz=recipient.timezone,
            brand=ctx.branding,
            unsubscribe_url=unsubscribe.url,
            per_group=s.digest_max_items_per_group,
            total=s.digest_max_items,
        )
        return compose.build(
            subject=rendered.subject,
            sender_name=s.from_name,
            sender_address=s.from_address,
            to_name=recipient.display_name,
            to_address=recipient.email,
            text=rendered.text,
            html=rendered.html,
            msg_id=compose.message_id(
                compose.digest_local_id(recipient.user_id, claim.id), s.mail_domain
            ),
            date=now,
            unsubscribe=unsubscribe,
        )

    async def _finish(
        self,
        recipient: Recipient,
        claim: store.DigestClaim,
        outcome: str,
        reason: str | None,
        *,
        message_id: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        ctx = self.ctx
        effects = await asyncio.to_thread(
            store.finish_digest,
            ctx.engine,
            ctx.settings,
            claim,
            user_id=recipient.user_id,
            outcome=outcome,
            reason=reason,
            now=ctx.clock(),
            message_id=message_id,
            retry_at=retry_at,
        )
        ctx.settle(effects)

    async def _failed(
        self,
        recipient: Recipient,
        claim: store.DigestClaim,
        err: SendError,
        summary: RunSummary,
    ) -> None:
        ctx, s = self.ctx, self.ctx.settings
        if err.temporary and claim.attempts < s.email_max_attempts:
            metrics.EMAIL_RETRIES.labels(kind=KIND, status_class=err.status_class).inc()
            retry_at = ctx.clock() + ctx.retry_delay(claim.attempts)
            logger.warning(
                "digest not accepted, will retry",
                user_id=recipient.user_id,
                attempt=claim.attempts,
                reason=err.reason,
                retry_at=retry_at.isoformat(),
            )
            await self._finish(recipient, claim, "retry", err.reason, retry_at=retry_at)
            summary.retrying += 1
            return
        if err.temporary:
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="exhausted").inc()
            reason = f"gave up after {claim.attempts} attempts: {err.reason}"
            await self._finish(recipient, claim, store.DEAD, reason)
        else:
            metrics.EMAIL_FAILED.labels(kind=KIND, reason="permanent").inc()
            await self._finish(recipient, claim, store.FAILED, err.reason)
        summary.failed += 1
        logger.warning("digest failed, dead-lettered", user_id=recipient.user_id, reason=err.reason)


_SUPPRESSION_REASONS = {
    "unknown_user": "unknown user: no User record",
    "no_address": "the user has no email address",
    "email_off": "the user turned email off",
    "digest_off": "the user turned the daily digest off",
}
