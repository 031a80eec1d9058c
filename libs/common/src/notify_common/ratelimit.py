"""API rate limits shared by every replica: one fixed-window counter per key in PostgreSQL.

A hit is one atomic upsert (INSERT … ON CONFLICT DO UPDATE … RETURNING), so concurrent
requests on any number of replicas count against the same budget and never lose an
increment. A key's window starts with its first request and lasts `window_s`; when it has
ended the next request starts a new one. Windows are per key rather than aligned to the
clock, so refused clients do not all come back in the same second. The database's clock
decides, never a replica's. Rows of ended windows are deleted now and then by whichever
replica gets there (see docs/decisions/0008-rate-limits.md).

The limiter fails open: when the store cannot be reached the request goes through (logged
and counted) — rate limiting protects the service, it must not become its outage.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import anyio.to_thread
from fastapi import HTTPException
from pydantic import Field
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from notify_common import logging as log
from notify_common import metrics
from notify_common.settings import CommonSettings

logger = log.get(__name__)

# `now()` is fixed for the statement, so both CASEs see the same instant.
_HIT = text(
    """
    INSERT INTO rate_limits AS r (key, window_end, hits)
    VALUES (:key, now() + make_interval(secs => :window_s), 1)
    ON CONFLICT (key) DO UPDATE SET
        hits = CASE WHEN r.window_end > now() THEN r.hits + 1 ELSE 1 END,
        window_end = CASE WHEN r.window_end > now() THEN r.window_end
                          ELSE EXCLUDED.window_end END
    RETURNING hits, EXTRACT(EPOCH FROM (window_end - now()))::float8 AS remaining_s
    """
)
# Bounded, so a sweep never holds many row locks or runs long on a big table.
_SWEEP = text(
    """
    DELETE FROM rate_limits WHERE key IN (
        SELECT key FROM rate_limits WHERE window_end < now() LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    """
)


class UserRateLimitSettings(CommonSettings):
    # Requests one user may make per minute on the user API (the inbox endpoints and
    # opening the realtime stream share the budget). 0 turns the limit off.
    user_rate_limit_per_minute: int = Field(default=100, ge=0)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the key's window ends (whole seconds, at least 1 when refused).
    reset_s: int
    window_s: float = 60.0

    def detail(self) -> str:
        return (
            f"rate limit exceeded: at most {self.limit} requests per {self.window_s:g} s;"
            f" retry after {self.reset_s} s"
        )

    def headers(self) -> dict[str, str]:
        """Response headers for a refusal: Retry-After plus the IETF RateLimit fields."""
        return {
            "Retry-After": str(self.reset_s),
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


class RateLimiter:
    """`limit` requests per `window_s` per key, counted in the shared `rate_limits` table.

    `hit` blocks on one database round trip: call it from a worker thread (a sync FastAPI
    dependency runs in one) or through `ahit`. With no engine or a limit of 0 every request
    is allowed without touching the database."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        service: str,
        limit: int,
        window_s: float = 60.0,
        sweep_interval_s: float = 60.0,
        sweep_batch: int = 1000,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.engine = engine
        self.service = service
        self.limit = limit
        self.window_s = window_s
        self.sweep_interval_s = sweep_interval_s
        self.sweep_batch = sweep_batch
        self._next_sweep = time.monotonic() + sweep_interval_s
        self._sweep_lock = threading.Lock()
        self._limited = metrics.RATE_LIMITED.labels(service=service)
        self._errors = metrics.RATE_LIMIT_STORE_ERRORS.labels(service=service)

    @property
    def enabled(self) -> bool:
        return self.engine is not None and self.limit > 0

    def hit(self, key: str) -> Decision:
        """Count one request for `key` and say whether it may proceed."""
        if self.engine is None or self.limit <= 0:
            return Decision(True, self.limit, self.limit, 0)
        try:
            with self.engine.begin() as conn:
                row = conn.execute(_HIT, {"key": key, "window_s": self.window_s}).one()
        except SQLAlchemyError as exc:
            self._errors.inc()
            logger.warning("rate limit store unavailable; request allowed", error=str(exc)[:300])
            return Decision(True, self.limit, self.limit, 0)
        hits, remaining_s = int(row.hits), float(row.remaining_s)
        self._maybe_sweep()
        allowed = hits <= self.limit
        if not allowed:
            self._limited.inc()
        return Decision(
            allowed=allowed,
            limit=self.limit,
            remaining=max(self.limit - hits, 0),
            reset_s=max(1, math.ceil(remaining_s)),
            window_s=self.window_s,
        )

    async def ahit(self, key: str) -> Decision:
        return await anyio.to_thread.run_sync(self.hit, key)

    def enforce(self, key: str) -> Decision:
        """`hit`, raising 429 Too Many Requests (with Retry-After) when over the limit."""
        decision = self.hit(key)
        if not decision.allowed:
            raise too_many_requests(decision)
        return decision

    def sweep(self) -> int:
        """Delete up to `sweep_batch` rows of ended windows; the number deleted."""
        if self.engine is None:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(_SWEEP, {"batch": self.sweep_batch})
        return int(getattr(result, "rowcount", 0) or 0)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + self.sweep_interval_s
            self.sweep()
        except SQLAlchemyError as exc:
            logger.warning("rate limit sweep failed", error=str(exc)[:300])
        finally:
            self._sweep_lock.release()


def too_many_requests(decision: Decision) -> HTTPException:
    return HTTPException(status_code=429, detail=decision.detail(), headers=decision.headers())


def user_key(user_id: str) -> str:
    return f"user:{user_id}"


def service_key(name: str) -> str:
    return f"service:{name}"
