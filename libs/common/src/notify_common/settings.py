"""Settings: pydantic-settings classes read from NOTIFY_* environment variables.

Secrets are SecretStr without a default, so a service refuses to start without them;
`load` turns pydantic's validation error into one clear line naming the variable.
"""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "NOTIFY_"


class CommonSettings(BaseSettings):
    """What every service needs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Prefixed to every topic and consumer group name: lets tests and several environments
    # share one cluster without seeing each other's events.
    topic_prefix: str = ""
    # Group membership timeouts. Lower than Kafka's 45 s default so that a replaced worker
    # takes over within seconds; brokers enforce a minimum (6 s on Apache Kafka's defaults).
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 1_000
    # How long a fetch may wait for data before returning. The end-to-end latency budget is
    # spent hop by hop, so this is deliberately short; raising it trades latency for CPU.
    kafka_fetch_wait_ms: int = 20
    # Write every record as its own batch where a reader relies on the high watermark (table
    # changelogs). Only for brokers that under-report the watermark after batched writes
    # (the embedded Tansu broker); costs throughput, so off for Apache Kafka.
    kafka_single_record_batches: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    environment: str = "dev"
    http_host: str = "0.0.0.0"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class DatabaseSettings(CommonSettings):
    database_url: SecretStr = Field(description="SQLAlchemy URL, postgresql+psycopg://…")
    db_pool_size: int = 10


class UserAuthSettings(CommonSettings):
    jwt_secret: SecretStr = Field(description="HS256 secret that signs user JWTs")
    jwt_audience: str = "notify"
    jwt_issuer: str = "notify"


S = TypeVar("S", bound=BaseSettings)


class SettingsError(SystemExit):
    pass


def load(cls: type[S], **overrides: object) -> S:
    """Build settings or exit with a message naming every missing or invalid variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            env = f"{ENV_PREFIX}{field.upper()}"
            if err["type"] == "missing":
                problems.append(f"{env} is required but not set")
            else:
                problems.append(f"{env} is invalid: {err['msg']}")
        message = f"{cls.__name__}: " + "; ".join(problems)
        print(message, file=sys.stderr)
        raise SettingsError(message) from None
