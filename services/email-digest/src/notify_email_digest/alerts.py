"""Quota alerts to a Slack-compatible webhook.

The quota increment that first reaches 80, 90 or 100 % of a day's quota inserts that
level's row (once per level and day, whichever replica gets there: store._take_quota);
this sender delivers the rows, retrying a failing webhook with backoff. A crash between
the webhook's 2xx and the commit repeats one alert (at least once).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from notify_common import logging as log
from notify_common import metrics
from notify_email_digest import store
from notify_email_digest.context import Context

logger = log.get(__name__)

LEVEL_NAMES = {80: "warning", 90: "critical", 100: "exhausted"}
_ICONS = {80: ":warning:", 90: ":rotating_light:", 100: ":red_circle:"}
_MAX_ATTEMPTS = 20
_TIMEOUT_S = 10.0


def payload(
    alert: store.Alert, *, service: str, environment: str, timestamp: str
) -> dict[str, Any]:
    """Slack reads `text`; the other fields are for any other receiver."""
    if alert.level >= 100:
        what = "is used up: digests wait for tomorrow's run (critical mail still goes out)"
    else:
        what = f"is {alert.level} % used: digests beyond it wait for tomorrow's run"
    return {
        "text": (
            f"{_ICONS[alert.level]} Notify email quota {what} "
            f"({alert.used} of {alert.quota_limit} emails on {alert.day.isoformat()} UTC, "
            f"{environment})."
        ),
        "level": LEVEL_NAMES[alert.level],
        "percent": alert.level,
        "used": alert.used,
        "limit": alert.quota_limit,
        "day": alert.day.isoformat(),
        "service": service,
        "environment": environment,
        "timestamp": timestamp,
    }


class AlertSender:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def send_due(self) -> int:
        ctx = self.ctx
        now = ctx.clock()
        alerts = await asyncio.to_thread(
            store.claim_alerts, ctx.engine, now=now, lease_s=60.0, max_attempts=_MAX_ATTEMPTS
        )
        if not alerts:
            return 0
        secret = ctx.settings.email_quota_webhook_url
        url = secret.get_secret_value() if secret is not None else ""
        async with httpx.AsyncClient(timeout=_TIMEOUT_S) as client:
            for alert in alerts:
                error = await self._post(client, url, alert)
                await asyncio.to_thread(
                    store.finish_alert,
                    ctx.engine,
                    alert,
                    now=ctx.clock(),
                    error=error,
                    retry_at=ctx.clock() + ctx.retry_delay(alert.attempts) + timedelta(seconds=1),
                )
        return len(alerts)

    async def _post(self, client: httpx.AsyncClient, url: str, alert: store.Alert) -> str | None:
        body = payload(
            alert,
            service="email-digest",
            environment=self.ctx.settings.environment,
            timestamp=self.ctx.clock().isoformat(),
        )
        if not url:
            metrics.EMAIL_QUOTA_WEBHOOK.labels(result="disabled").inc()
            logger.warning("email quota alert (no webhook configured)", **body)
            return None
        try:
            response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if response.is_success:
                metrics.EMAIL_QUOTA_WEBHOOK.labels(result="ok").inc()
                logger.info("email quota alert sent", level=alert.level, day=str(alert.day))
                return None
            error = f"webhook answered {response.status_code}"
        metrics.EMAIL_QUOTA_WEBHOOK.labels(result="error").inc()
        # The URL is a secret (the webhook's credential): never in a log line or the table.
        error = error.replace(url, "<webhook>")
        logger.warning("email quota alert not delivered, will retry", error=error[:300])
        return error
