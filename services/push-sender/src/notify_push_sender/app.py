"""The push-sender process: health and metrics over HTTP, the notifications consumer and the
dispatcher in background threads that start and stop with the app."""

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
from notify_push_sender.consumer import build_runner
from notify_push_sender.dispatcher import Dispatcher
from notify_push_sender.events import Publisher
from notify_push_sender.settings import PushSenderSettings
from notify_push_sender.vapid import VapidKeys

logger = log.get(__name__)

# Shutdown waits this long for the consumer to commit and the dispatcher to record what is
# in flight (bounded by the request timeout) before the process exits regardless.
_DRAIN_TIMEOUT_S = 30.0


def _waiting(runner: ConsumerRunner) -> Callable[[], str | None]:
    return lambda: None if runner.healthy else f"{runner.group} is waiting for the database"


def build_app(settings: PushSenderSettings, *, engine: Engine | None = None) -> FastAPI:
    db = engine or make_engine(settings)
    keys = VapidKeys.from_settings(
        settings.vapid_private_key.get_secret_value(),
        settings.vapid_previous_private_keys.get_secret_value(),
    )
    # Dev host names are resolved once here: the connect-time guard sees only addresses.
    policy = settings.endpoint_policy(resolve=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = app.state.workers = BackgroundWorkers(_DRAIN_TIMEOUT_S)
        # Separate producers: each thread flushes its own writes before it commits.
        dispatcher_producer = EventProducer(settings)
        workers.on_close(dispatcher_producer.close)
        dispatcher = Dispatcher(
            settings=settings,
            engine=db,
            publisher=Publisher(settings, dispatcher_producer),
            keys=keys,
            policy=policy,
        )
        workers.start(
            "dispatcher",
            dispatcher.run,
            stop=dispatcher.stop,
            problem=lambda: (
                None if dispatcher.healthy else "the dispatcher cannot reach the database"
            ),
        )
        # One consumer per lane (docs/decisions/0010-priority-lanes.md), each with its own
        # producer; both hand pushes to the one dispatcher.
        for lane in lanes.LANES:
            consumer_producer = EventProducer(settings)
            workers.on_close(consumer_producer.close)
            runner = build_runner(
                settings, db, producer=consumer_producer, sender=dispatcher, lane=lane
            )
            workers.start(
                "notifications-consumer" if lane == lanes.BULK else f"{lane}-consumer",
                runner.run,
                stop=runner.stop,
                problem=_waiting(runner),
            )
        logger.info(
            "push-sender started",
            vapid_public_key=keys.current.public_b64,
            dev_hosts=sorted(policy.dev_hosts),
            allowed_hosts=sorted(policy.allowed_hosts),
        )
        try:
            yield
        finally:
            await asyncio.to_thread(workers.drain)
            if engine is None:
                db.dispose()

    app = create_app(
        service="push-sender",
        title="Notify push-sender",
        description="Web Push delivery: health and metrics only.",
        readiness=[database_check(db), workers_check(lambda: getattr(app.state, "workers", None))],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
