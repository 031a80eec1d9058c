from __future__ import annotations

from pydantic import Field

from notify_common.ratelimit import UserRateLimitSettings
from notify_common.settings import DatabaseSettings, UserAuthSettings


class RealtimeSettings(DatabaseSettings, UserAuthSettings, UserRateLimitSettings):
    realtime_port: int = 8002
    # Origins allowed to open the stream from a browser (comma separated), e.g. the page
    # served by the inbox. Empty: same-origin only.
    realtime_cors_origins: str = ""
    # An SSE comment line this often on an idle stream keeps proxies and load balancers
    # from closing it (most idle timeouts are 30-60 s).
    realtime_heartbeat_s: float = Field(default=15.0, gt=0)
    # Events a stream may have waiting for its client. A client that falls this far behind
    # is told to resync and disconnected, so it cannot hold the service's memory.
    realtime_queue_max: int = Field(default=1000, ge=1)
    # After the resync event is queued, how long a client that reads nothing more may keep
    # its connection before it is cut.
    realtime_write_timeout_s: float = Field(default=10.0, gt=0)
    # The reconnect delay EventSource is told to use (the SSE `retry:` field).
    realtime_retry_ms: int = Field(default=2000, ge=0)
    # On shutdown every client is told to reconnect after a random delay up to this, so
    # that the clients of a stopping instance do not all arrive at once elsewhere.
    realtime_shutdown_retry_spread_ms: int = Field(default=3000, ge=0)
    # A resuming client (Last-Event-ID) is replayed at most this many missed notifications
    # from the feed; further behind, it is told to resync (reload the feed page instead).
    realtime_backfill_max: int = Field(default=500, ge=1)
    # How long a resuming stream waits for the inbox to persist notifications this instance
    # has already seen go by (a live event can overtake the feed's write).
    realtime_resume_wait_s: float = Field(default=5.0, ge=0)
    # How long, and for how many users, the instance remembers the last notification it saw
    # go by per user (what a resume must find persisted before it replays the feed).
    realtime_recent_window_s: float = Field(default=120.0, gt=0)
    realtime_recent_max_users: int = Field(default=200_000, ge=1)
    # Records handed to the event loop at most per consumer pass.
    realtime_consume_batch: int = Field(default=1000, ge=1)

    def cors_origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/") for o in self.realtime_cors_origins.split(",") if o.strip()
        )
