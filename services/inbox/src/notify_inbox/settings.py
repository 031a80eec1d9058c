from __future__ import annotations

from pydantic import Field

from notify_common.ratelimit import UserRateLimitSettings
from notify_common.settings import DatabaseSettings, UserAuthSettings
from notify_common.webpush import PushEndpointSettings, VapidPublicSettings


class InboxSettings(
    DatabaseSettings,
    UserAuthSettings,
    UserRateLimitSettings,
    PushEndpointSettings,
    VapidPublicSettings,
):
    inbox_port: int = 8001
    # Feed and preference requests are small; anything bigger is a mistake or an attack.
    inbox_max_body_bytes: int = 16 * 1024
    # Notifications persisted per COPY: bigger batches amortise the round trips, smaller
    # ones shorten the redelivery after a crash.
    inbox_consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Outbox rows published per relay pass (one broker confirmation and one UPDATE each).
    inbox_outbox_batch_size: int = Field(default=500, ge=1, le=500)
    # How often an idle relay looks for new outbox rows: the added latency of a preference
    # change on its way to the fanout.
    inbox_outbox_poll_interval_s: float = Field(default=0.1, gt=0)
    # Run the feed consumer and the outbox relay in this process. Turning them off gives an
    # API-only replica (the HTTP tier and the consumers then scale independently).
    inbox_consumer_enabled: bool = True
    inbox_relay_enabled: bool = True
    # Run the admin consumers in this process (with the feed consumer): dead letters
    # (notify.dlq.v1) and the message status inputs (notify.fanout-results.v1,
    # notify.deliveries.v1).
    inbox_admin_consumers_enabled: bool = True
    # The suppression log (who was not notified and why) keeps a row this many days; the
    # process running the admin consumers deletes older rows every interval, in batches.
    suppression_retention_days: int = Field(default=30, ge=1)
    suppression_retention_interval_s: float = Field(default=3600.0, gt=0)
    suppression_retention_batch: int = Field(default=5_000, ge=1, le=100_000)
    # Web Push: NOTIFY_VAPID_PUBLIC_KEY (served to browsers; push is off while unset),
    # NOTIFY_PUSH_ALLOWED_HOSTS and NOTIFY_PUSH_DEV_HOSTS come from the mixins above.
    # Active subscriptions one user may hold (browsers and devices); more is refused.
    push_max_subscriptions_per_user: int = Field(default=20, ge=1, le=1_000)
