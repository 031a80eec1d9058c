"""email-digest settings (NOTIFY_* environment variables)."""

from __future__ import annotations

from email.utils import parseaddr

from pydantic import Field, SecretStr, field_validator

from notify_common.settings import DatabaseSettings
from notify_email_digest.smtp import SmtpTarget, parse_smtp_url


class EmailDigestSettings(DatabaseSettings):
    email_digest_port: int = 8005

    # --- SMTP -------------------------------------------------------------------------------
    # smtp://[user:pass@]host[:port] (STARTTLS when the server offers it), smtp+starttls://…
    # (STARTTLS required) or smtps://… (TLS from the first byte). A secret: never logged.
    smtp_url: SecretStr = Field(description="SMTP server URL with credentials")
    # The sender: "Display Name <address>" or a bare address (the brand name is then shown).
    email_from: str = Field(description="From address of notification email")
    smtp_timeout_s: float = Field(default=30.0, gt=0)

    # --- quota and limits ---------------------------------------------------------------------
    # Mails per UTC day across the whole deployment (every replica shares the count in
    # PostgreSQL). Critical mail is counted but never held back; 0 sends only critical mail.
    email_daily_quota: int = Field(default=200, ge=0)
    # Immediate (critical) mails per user per clock hour; more are folded into the digest.
    email_rate_limit_per_hour: int = Field(default=10, ge=0)
    # Slack-compatible incoming webhook for the 80/90/100 % quota alerts (unset: metrics and
    # logs only). Treated as a secret: webhook URLs carry their credential in the path.
    email_quota_webhook_url: SecretStr | None = None

    # --- what is critical -----------------------------------------------------------------------
    # Notification types mailed at once like critical=true ones, e.g. ["SECURITY_ALERT"]
    # (JSON in the environment variable). Any string: upstream types may be newer than us.
    email_critical_types: list[str] = Field(default_factory=list)

    # --- the digest ------------------------------------------------------------------------------
    # The digest hour of users whose own records do not set one, in UTC.
    digest_hour_utc: int = Field(default=9, ge=0, le=23)
    # Run the digest scheduler in this process (every replica may: claims keep it exactly
    # once). Off: digests only go out through `notify-email-digest run-digest` (a CronJob).
    digest_scheduler_enabled: bool = True
    # How often the scheduler looks for users whose digest hour has come.
    digest_poll_interval_s: float = Field(default=30.0, gt=0)
    # Notifications listed per server/channel group and per digest; the rest are counted.
    digest_max_items_per_group: int = Field(default=5, ge=1, le=100)
    digest_max_items: int = Field(default=50, ge=1, le=1000)

    # --- content ------------------------------------------------------------------------------
    email_brand_name: str = Field(default="Notify", min_length=1, max_length=100)
    email_brand_color: str = Field(default="#4f46e5", pattern=r"^#[0-9a-fA-F]{6}$")
    # Locale of users whose record has none we have templates for (en, fr, de).
    email_default_locale: str = "en"
    # Prefix of relative action URLs of notifications ("/servers/…"): the chat app's address.
    # Unset: links are left out (a relative link in a mail leads nowhere).
    email_app_url: str = ""
    # The public address of Notify's notification center (the inbox's /app/): buttons that
    # perform an API action (mark as read) link there. Unset: those buttons are left out.
    email_center_url: str = ""
    # The public URL of the inbox's unsubscribe endpoint (https in production): the
    # List-Unsubscribe link of every non-critical mail.
    email_unsubscribe_url: str = "http://127.0.0.1:8001/v1/email/unsubscribe"
    # The mailto: of List-Unsubscribe (a mailbox the operator processes). Default: the From
    # address, with the token in the subject.
    email_unsubscribe_mailto: str | None = None

    # --- delivery mechanics ---------------------------------------------------------------------
    # Attempts (temporary failures: 4xx, connection errors) before a mail is given up and
    # dead-lettered; backoff between them is exponential with jitter, capped.
    email_max_attempts: int = Field(default=15, ge=1, le=100)
    email_retry_base_s: float = Field(default=2.0, gt=0)
    email_retry_cap_s: float = Field(default=300.0, gt=0)
    # A claimed mail or digest must be sent within this lease, or another replica takes it
    # over (the claimer died). Bounds how late a crashed replica's mail goes out.
    email_lease_s: float = Field(default=120.0, gt=0)
    # Longest idle wait of the immediate-mail sender between looks at the queue.
    email_poll_interval_s: float = Field(default=1.0, gt=0)
    # An immediate mail for a user the directory does not know yet (the User record may
    # still be on its way) is retried this long before it is suppressed.
    email_unknown_user_grace_s: float = Field(default=120.0, ge=0)
    email_consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Final records (the idempotency keys), digests and rate windows are kept this long.
    email_retention_days: int = Field(default=30, ge=1)

    @field_validator("smtp_url")
    @classmethod
    def _valid_smtp_url(cls, value: SecretStr) -> SecretStr:
        parse_smtp_url(value.get_secret_value())  # raises ValueError naming the problem
        return value

    @field_validator("email_from")
    @classmethod
    def _valid_from(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be one line")
        _name, address = parseaddr(value)
        if "@" not in address or " " in address:
            raise ValueError('must be an address: "notify@example.com" or "Name <addr>"')
        return value.strip()

    @field_validator("email_critical_types")
    @classmethod
    def _strip_types(cls, value: list[str]) -> list[str]:
        return [v.strip() for v in value if v.strip()]

    @property
    def smtp(self) -> SmtpTarget:
        return parse_smtp_url(self.smtp_url.get_secret_value())

    @property
    def from_address(self) -> str:
        return parseaddr(self.email_from)[1]

    @property
    def from_name(self) -> str:
        return parseaddr(self.email_from)[0] or self.email_brand_name

    @property
    def mail_domain(self) -> str:
        """The domain of Message-IDs: the sender's."""
        return self.from_address.rpartition("@")[2] or "localhost"
