from __future__ import annotations

from pydantic import Field, SecretStr

from notify_common.settings import CommonSettings


class IngestSettings(CommonSettings):
    # "name:token[:scope+scope]" entries, comma separated; scopes are messages,
    # announcements and directory (all three when omitted).
    service_tokens: SecretStr
    ingest_port: int = 8000
    ingest_max_body_bytes: int = 256 * 1024
    # How long a request waits for the broker to confirm its write before answering 503.
    ingest_publish_timeout_s: float = 5.0
    # PostgreSQL holding the rate-limit counters shared by every ingest replica (the same
    # database as the other services). Unset: no rate limit (docs/decisions/0008).
    database_url: SecretStr | None = None
    db_pool_size: int = Field(default=5, ge=1)
    # Requests one service (one name in NOTIFY_SERVICE_TOKENS) may make per minute, over all
    # replicas; more get 429 with Retry-After. 0 turns the limit off.
    ingest_rate_limit_per_minute: int = Field(default=60_000, ge=0)
    # How often each replica looks for scheduled announcements that are due.
    ingest_schedule_poll_s: float = Field(default=1.0, gt=0)
