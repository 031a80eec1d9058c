from __future__ import annotations

from pydantic import SecretStr

from notify_common.settings import CommonSettings


class IngestSettings(CommonSettings):
    # "name:token[:scope+scope]" entries, comma separated; scopes are messages,
    # announcements and directory (all three when omitted).
    service_tokens: SecretStr
    ingest_port: int = 8000
    ingest_max_body_bytes: int = 256 * 1024
    # How long a request waits for the broker to confirm its write before answering 503.
    ingest_publish_timeout_s: float = 5.0
