"""The email-digest process: health and metrics over HTTP; the two consumers and the
sending worker in background threads that start and stop with the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from notify_common import logging as log
from notify_common.db.engine import make_engine
from notify_common.http import create_app
from notify_common.kafka import lanes
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import ConsumerRunner
from notify_common.workers import BackgroundWorkers, database_check, workers_check
from notify_email_digest.consumer import build_directory_runner, build_runner
from notify_email_digest.context import Context
from notify_email_digest.outbox import OutboxPump
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.worker import Worker

logger = log.get(__name__)

# Shutdown waits this long for each consumer to commit its batch before exiting regardless.
_DRAIN_TIMEOUT_S = 30.0


def sender_problem(worker: Worker) -> str | None:
    if not worker.alive:
        return "the email sender is not running"
    return "; ".join(sorted(worker.problems.values())) or None


def waiting_problem(runner: ConsumerRunner) -> Callable[[], str | None]:
    return lambda: None if runner.healthy else f"{runner.group} is waiting for the database"


def build_app(settings: EmailDigestSettings, *, engine: Engine | None = None) -> FastAPI:
    db = engine or make_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = app.state.workers = BackgroundWorkers(_DRAIN_TIMEOUT_S)
        # One producer per thread that flushes: each confirms only its own writes.
        outbox_producer = EventProducer(settings)
        consumer_producer = EventProducer(settings)
        priority_producer = EventProducer(settings)
        directory_producer = EventProducer(settings)
        for producer in (outbox_producer, consumer_producer, priority_producer, directory_producer):
            workers.on_close(producer.close)
        ctx = Context(settings=settings, engine=db, pump=OutboxPump(db, outbox_producer))
        worker = Worker(ctx)
        worker.start()
        workers.track(stop=worker.stop, problem=lambda: sender_problem(worker))
        app.state.context = ctx
        runner = build_runner(
            settings,
            db,
            producer=consumer_producer,
            on_queued=worker.wake,
            on_outbox=worker.wake_outbox,
        )
        # The priority lane's own runner (docs/decisions/0010-priority-lanes.md).
        priority = build_runner(
            settings,
            db,
            producer=priority_producer,
            on_queued=worker.wake,
            on_outbox=worker.wake_outbox,
            lane=lanes.PRIORITY,
        )
        directory = build_directory_runner(settings, db, producer=directory_producer)
        for name, r in (
            ("notifications-consumer", runner),
            ("priority-consumer", priority),
            ("directory-consumer", directory),
        ):
            workers.start(name, r.run, stop=r.stop, problem=waiting_problem(r))
        logger.info(
            "email-digest started",
            smtp=settings.smtp.describe(),
            daily_quota=settings.email_daily_quota,
            digest_scheduler=settings.digest_scheduler_enabled,
        )
        try:
            yield
        finally:
            await asyncio.to_thread(workers.drain)
            if engine is None:
                db.dispose()

    app = create_app(
        service="email-digest",
        title="Notify email-digest",
        description="Immediate critical email and the daily digest: health and metrics only.",
        readiness=[database_check(db), workers_check(lambda: getattr(app.state, "workers", None))],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
