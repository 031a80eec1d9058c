"""The inbox process: the user-facing API, plus the feed consumer and the outbox relay in
background threads that start and stop with the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from notify_common import logging as log
from notify_common.db.engine import make_engine
from notify_common.http import create_app
from notify_common.kafka import lanes
from notify_common.ratelimit import RateLimiter
from notify_common.workers import BackgroundWorkers, database_check, workers_check
from notify_inbox import admin, feed, preferences, push_subscriptions, unsubscribe, webapp
from notify_inbox.admin_consumers import build_dlq_runner, build_status_runner
from notify_inbox.consumer import build_runner
from notify_inbox.outbox import OutboxRelay
from notify_inbox.settings import InboxSettings
from notify_inbox.suppression_log import Retention

logger = log.get(__name__)

# How long shutdown waits for a worker to finish its batch (and, for the consumer, commit
# and leave the group) before the process exits regardless.
_DRAIN_TIMEOUT_S = 30.0


def build_app(settings: InboxSettings, *, engine: Engine | None = None) -> FastAPI:
    """The inbox app. Starting it (lifespan) starts the consumer and the relay when enabled
    in settings; stopping it lets both finish the batch in hand first."""
    db = engine or make_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = app.state.workers = BackgroundWorkers(_DRAIN_TIMEOUT_S)
        if settings.inbox_relay_enabled:
            relay = OutboxRelay(settings=settings, engine=db)
            workers.start("outbox-relay", lambda: relay.run(workers.stop))
        if settings.inbox_consumer_enabled:
            # One runner per lane (docs/decisions/0010-priority-lanes.md).
            for lane in lanes.LANES:
                runner = build_runner(settings, db, lane=lane)
                name = "feed-consumer" if lane == lanes.BULK else f"feed-consumer-{lane}"
                workers.start(name, runner.run, stop=runner.stop)
        if settings.inbox_consumer_enabled and settings.inbox_admin_consumers_enabled:
            dlq_runner = build_dlq_runner(settings, db)
            workers.start("dlq-consumer", dlq_runner.run, stop=dlq_runner.stop)
            status_runner = build_status_runner(settings, db)
            workers.start("status-consumer", status_runner.run, stop=status_runner.stop)
            # The process that writes the suppression log also ages it out.
            retention = Retention(
                db,
                retention_days=settings.suppression_retention_days,
                interval_s=settings.suppression_retention_interval_s,
                batch=settings.suppression_retention_batch,
            )
            workers.start("suppression-retention", lambda: retention.run(workers.stop))
        try:
            yield
        finally:
            await asyncio.to_thread(workers.drain)
            producer = getattr(app.state, "admin_producer", None)
            if producer is not None:  # created by the first requeue
                producer.close()
            if engine is None:
                db.dispose()

    app = create_app(
        service="inbox",
        title="Notify inbox",
        description="The user's notification feed and preferences.",
        readiness=[database_check(db), workers_check(lambda: getattr(app.state, "workers", None))],
        max_body_bytes=settings.inbox_max_body_bytes,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = db
    app.state.rate_limiter = RateLimiter(
        db, service="inbox", limit=settings.user_rate_limit_per_minute, window_s=60.0
    )

    @app.exception_handler(OperationalError)
    async def database_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        logger.warning("database unavailable", error=str(exc.orig)[:300])
        return JSONResponse(
            {"detail": "the database is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.include_router(feed.router, prefix="/v1")
    app.include_router(preferences.router, prefix="/v1")
    app.include_router(push_subscriptions.router, prefix="/v1")
    app.include_router(unsubscribe.router, prefix="/v1")
    app.include_router(admin.router, prefix="/v1")
    webapp.install(app)  # the notification center page at /app/
    return app
