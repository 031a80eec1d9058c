"""push-sender settings (NOTIFY_* environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from notify_common.settings import DatabaseSettings
from notify_common.webpush import (
    PushEndpointSettings,
    check_vapid_private_key,
    load_vapid_private_key,
    parse_p256_point,
    public_key_b64,
)
from notify_schemas.models import NotificationType

DAY_S = 24 * 3600


class PushSenderSettings(DatabaseSettings, PushEndpointSettings):
    push_sender_port: int = 8004

    # --- VAPID (RFC 8292) -------------------------------------------------------------
    # The application server's private key: base64url of the 32-byte P-256 scalar, or a PEM.
    # `notify-push-sender vapid generate` prints a fresh pair. Never logged.
    vapid_private_key: SecretStr = Field(description="VAPID private key (P-256)")
    # A contact the push services can reach: "mailto:ops@example.com" or an https URL.
    vapid_subject: str = Field(description="VAPID subject: mailto: or https: contact")
    # Optional: the public key the inbox serves. When set it must match the private key,
    # which catches a rotation applied to one service and not the other.
    vapid_public_key: str | None = None
    # Comma-separated previous private keys, kept during a rotation so that subscriptions
    # made with an older public key keep working until their browsers re-subscribe.
    vapid_previous_private_keys: SecretStr = SecretStr("")
    # Lifetime of a VAPID JWT (push services refuse more than 24 h); it is cached per push
    # service origin and signed again when less than a tenth of it remains.
    vapid_jwt_ttl_s: int = Field(default=12 * 3600, ge=60, le=12 * 3600)

    # --- what is sent ---------------------------------------------------------------------
    push_ttl_s: int = Field(default=DAY_S, ge=0, le=28 * DAY_S)
    # Per notification type, e.g. {"SYSTEM": 3600} (JSON in the environment variable).
    push_ttl_by_type: dict[NotificationType, int] = Field(default_factory=dict)
    push_icon: str = "/app/push/icon-192.png"
    push_badge: str = "/app/push/badge-72.png"
    # Prefix of the relative action URLs of notifications ("" leaves them relative: the
    # service worker resolves them against its own origin).
    push_url_base: str = ""

    # --- how it is sent --------------------------------------------------------------------
    push_max_in_flight: int = Field(default=256, ge=1, le=10_000)
    # Connections (and so pushes in flight) per push service origin: one slow service holds
    # at most this many, the others keep flowing.
    push_per_origin: int = Field(default=64, ge=1, le=1_000)
    push_request_timeout_s: float = Field(default=10.0, gt=0)
    # A claimed push must finish within this lease, or another claim takes it over (crash).
    push_lease_s: float = Field(default=60.0, gt=0)
    # Retries of 5xx, timeouts, connection errors and 429: attempts in all, then dead-letter.
    # The defaults retry for about four minutes (2, 4, 8 … 128 s, with jitter), so a push
    # service that fails for a minute or two costs no push (tests/reliability).
    push_max_attempts: int = Field(default=8, ge=1, le=50)
    push_retry_base_s: float = Field(default=2.0, gt=0)
    push_retry_cap_s: float = Field(default=300.0, gt=0)
    # A Retry-After beyond this is treated as this (a TTL usually runs out first anyway).
    push_retry_after_cap_s: float = Field(default=3600.0, gt=0)
    # Longest idle wait before looking for due pushes again (held and retried pushes).
    push_poll_interval_s: float = Field(default=1.0, gt=0)
    # Outcomes are recorded in batches at least this often.
    push_flush_interval_s: float = Field(default=0.02, gt=0)
    # Terminal records (the idempotency keys) are kept this long.
    push_retention_days: int = Field(default=14, ge=1)
    push_consumer_batch_size: int = Field(default=500, ge=1, le=10_000)

    @field_validator("vapid_private_key")
    @classmethod
    def _valid_private_key(cls, value: SecretStr) -> SecretStr:
        return check_vapid_private_key(value)

    @field_validator("vapid_previous_private_keys")
    @classmethod
    def _valid_previous_keys(cls, value: SecretStr) -> SecretStr:
        for part in value.get_secret_value().split(","):
            if part.strip():
                check_vapid_private_key(SecretStr(part))
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _valid_subject(cls, value: str) -> str:
        value = value.strip()
        if not (value.startswith("mailto:") and "@" in value) and not value.startswith("https://"):
            raise ValueError("must be a mailto: address or an https: URL")
        return value

    @field_validator("vapid_public_key")
    @classmethod
    def _public_key_matches(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value or not value.strip():
            return None
        parse_p256_point(value)
        private = info.data.get("vapid_private_key")
        if private is not None:  # absent when it failed its own validation
            derived = public_key_b64(
                load_vapid_private_key(private.get_secret_value()).public_key()
            )
            if derived != value.strip():
                raise ValueError("does not belong to NOTIFY_VAPID_PRIVATE_KEY (rotate both)")
        return value.strip()

    def ttl_for(self, notification_type: NotificationType) -> int:
        return self.push_ttl_by_type.get(notification_type, self.push_ttl_s)
