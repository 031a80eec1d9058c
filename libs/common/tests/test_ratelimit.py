"""The shared rate limiter against a real PostgreSQL: exact counting under concurrency,
one budget across replicas, window reset, Retry-After, the sweep and failing open."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from fastapi import HTTPException

from notify_common import metrics
from notify_common.db.engine import normalize_url
from notify_common.ratelimit import RateLimiter, service_key, user_key
from notify_common.testing.infra import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(normalize_url(database_url), pool_size=8)
    yield eng
    eng.dispose()


def rows(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.key: r.hits for r in conn.execute(sa.text("SELECT key, hits FROM rate_limits"))}


def test_the_request_over_the_limit_is_refused_with_the_time_to_wait(engine: sa.Engine) -> None:
    limiter = RateLimiter(engine, service="test", limit=3, window_s=60)
    decisions = [limiter.hit(user_key("alice")) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert 1 <= refused.reset_s <= 60
    assert refused.headers()["Retry-After"] == str(refused.reset_s)
    # Another key has its own budget.
    assert limiter.hit(user_key("bob")).allowed
    assert rows(engine) == {"user:alice": 4, "user:bob": 1}


def test_enforce_raises_429_with_retry_after(engine: sa.Engine) -> None:
    limiter = RateLimiter(engine, service="test", limit=1, window_s=30)
    limiter.enforce(service_key("upstream"))
    with pytest.raises(HTTPException) as refused:
        limiter.enforce(service_key("upstream"))
    assert refused.value.status_code == 429
    assert refused.value.headers is not None
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 30
    assert "at most 1 requests per 30 s" in str(refused.value.detail)


def test_replicas_share_one_budget(database_url: str) -> None:
    # Two engines stand for two processes: nothing is shared but the database.
    engines = [sa.create_engine(normalize_url(database_url)) for _ in range(2)]
    try:
        a, b = (RateLimiter(e, service="test", limit=5, window_s=60) for e in engines)
        allowed = []
        for _ in range(3):
            allowed += [a.hit("user:u").allowed, b.hit("user:u").allowed]
        assert allowed == [True] * 5 + [False]
    finally:
        for e in engines:
            e.dispose()


def test_concurrent_hits_are_counted_exactly(engine: sa.Engine) -> None:
    limiter = RateLimiter(engine, service="test", limit=25, window_s=60)
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda _: limiter.hit("user:busy"), range(60)))
    assert sum(d.allowed for d in decisions) == 25
    assert rows(engine)["user:busy"] == 60


def test_a_new_window_starts_after_the_old_one_ends(engine: sa.Engine) -> None:
    limiter = RateLimiter(engine, service="test", limit=2, window_s=0.5)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    time.sleep(0.6)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]


def test_the_sweep_deletes_ended_windows_only(engine: sa.Engine) -> None:
    short = RateLimiter(engine, service="test", limit=10, window_s=0.2)
    long = RateLimiter(engine, service="test", limit=10, window_s=60)
    short.hit("gone")
    long.hit("live")
    time.sleep(0.3)
    assert short.sweep() == 1
    assert rows(engine) == {"live": 1}


def test_the_sweep_runs_by_itself_on_a_later_hit(engine: sa.Engine) -> None:
    limiter = RateLimiter(engine, service="test", limit=10, window_s=0.1, sweep_interval_s=0.2)
    limiter.hit("old")
    time.sleep(0.3)
    limiter.hit("new")
    assert rows(engine) == {"new": 1}


def test_an_unreachable_store_fails_open_and_is_counted() -> None:
    dead = sa.create_engine(
        f"postgresql+psycopg://x:y@127.0.0.1:{free_port()}/none",
        connect_args={"connect_timeout": 2},
    )
    errors = metrics.RATE_LIMIT_STORE_ERRORS.labels(service="dead-store")
    before = errors._value.get()
    limiter = RateLimiter(dead, service="dead-store", limit=1, window_s=60)
    assert all(limiter.hit("k").allowed for _ in range(3))
    assert errors._value.get() == before + 3
    dead.dispose()


def test_no_store_or_limit_zero_means_no_limit(engine: sa.Engine) -> None:
    assert all(RateLimiter(None, service="t", limit=1).hit("k").allowed for _ in range(3))
    off = RateLimiter(engine, service="t", limit=0)
    assert all(off.hit("k").allowed for _ in range(3))
    assert rows(engine) == {}
