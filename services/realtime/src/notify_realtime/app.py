"""The realtime process: the SSE endpoint, health and metrics, and the Kafka consumer
thread that feeds the streams."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Engine
from starlette.types import Receive, Scope, Send

from notify_common import logging as log
from notify_common.db.engine import make_engine
from notify_common.http import create_app
from notify_common.ratelimit import RateLimiter
from notify_realtime import stream
from notify_realtime.consumer import StreamConsumer
from notify_realtime.feedstore import FeedStore
from notify_realtime.hub import Hub, Record
from notify_realtime.recent import RecentIndex
from notify_realtime.settings import RealtimeSettings

logger = log.get(__name__)

_CONSUMER_STOP_TIMEOUT_S = 10.0


class RealtimeApp:
    """The ASGI app: /v1/stream goes straight to the stream endpoint, everything else
    (health, readiness, metrics, OpenAPI, lifespan) to the FastAPI app."""

    def __init__(self, api: FastAPI, endpoint: stream.StreamEndpoint, hub: Hub) -> None:
        self.api = api
        self.endpoint = endpoint
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == stream.PATH:
            await self.endpoint(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    def begin_shutdown(self) -> None:
        """Thread- and signal-safe: tell every stream to reconnect and end it."""
        loop: asyncio.AbstractEventLoop | None = getattr(self.api.state, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.hub.begin_shutdown)


def build_app(settings: RealtimeSettings, *, engine: Engine | None = None) -> RealtimeApp:
    db = engine or make_engine(settings)
    hub = Hub(
        queue_max=settings.realtime_queue_max,
        write_timeout_s=settings.realtime_write_timeout_s,
        heartbeat_s=settings.realtime_heartbeat_s,
    )
    recent = RecentIndex(
        window_s=settings.realtime_recent_window_s, max_users=settings.realtime_recent_max_users
    )
    state: dict[str, StreamConsumer | threading.Thread] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = app.state.loop = asyncio.get_running_loop()

        def submit(records: list[Record]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(hub.dispatch, records)

        consumer = StreamConsumer(settings=settings, recent=recent, wants=hub.wants, submit=submit)
        stop = threading.Event()
        thread = threading.Thread(
            target=_guarded(consumer, stop), name="stream-consumer", daemon=True
        )
        state.update(consumer=consumer, thread=thread)
        thread.start()
        heartbeat = asyncio.create_task(_heartbeats(hub))
        try:
            yield
        finally:
            hub.begin_shutdown()
            heartbeat.cancel()
            stop.set()
            await asyncio.to_thread(thread.join, _CONSUMER_STOP_TIMEOUT_S)
            if engine is None:
                db.dispose()

    async def consumer_ready() -> str | None:
        consumer = state.get("consumer")
        thread = state.get("thread")
        if not isinstance(consumer, StreamConsumer) or not isinstance(thread, threading.Thread):
            return "consumer not started"
        if not thread.is_alive():
            return "consumer is not running"
        if not consumer.ready.is_set():
            return "consumer not positioned yet"
        return None

    async def accepting() -> str | None:
        return "shutting down" if hub.closing else None

    api = create_app(
        service="realtime",
        title="Notify realtime",
        description=(
            "GET /v1/stream: the caller's notifications, read-state changes and unread count "
            "as Server-Sent Events (bearer token or ?token=), resumable with Last-Event-ID."
        ),
        readiness=[consumer_ready, accepting],
        lifespan=lifespan,
    )
    api.state.settings = settings
    api.state.hub = hub
    _document_stream(api)
    api.state.recent = recent
    limiter = RateLimiter(db, service="realtime", limit=settings.user_rate_limit_per_minute)
    endpoint = stream.StreamEndpoint(
        settings=settings, hub=hub, recent=recent, store=FeedStore(db), limiter=limiter
    )
    return RealtimeApp(api, endpoint, hub)


def _guarded(consumer: StreamConsumer, stop: threading.Event) -> Callable[[], None]:
    def run() -> None:
        try:
            consumer.run(stop)
        except Exception:
            # /readyz reports the dead thread; the orchestrator restarts the process.
            logger.exception("stream consumer crashed")

    return run


def _document_stream(api: FastAPI) -> None:
    """Add /v1/stream to the OpenAPI document: it is served outside FastAPI's routing."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            schema["paths"][stream.PATH] = {
                "get": {
                    "summary": "The caller's events as Server-Sent Events",
                    "description": (
                        "Events: `notification` (id = notification_id, data = the feed item), "
                        "`read`, `unread-count`, `resync` (reload the feed; the stream ends). "
                        "Reconnect with Last-Event-ID (or ?last_event_id=) to receive what was "
                        "missed first. Comment lines are heartbeats."
                    ),
                    "parameters": [
                        {
                            "name": "token",
                            "in": "query",
                            "required": False,
                            "description": "A user JWT, for clients that cannot set headers",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "last_event_id",
                            "in": "query",
                            "required": False,
                            "description": "Resume after this notification id",
                            "schema": {"type": "string", "format": "uuid"},
                        },
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "description": "Resume after this notification id (wins)",
                            "schema": {"type": "string", "format": "uuid"},
                        },
                    ],
                    "security": [{"HTTPBearer": []}],
                    "responses": {
                        "200": {
                            "description": "the stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "401": {"description": "no valid user token"},
                        "429": {"description": "too many requests; see Retry-After"},
                        "503": {"description": "the instance is shutting down; reconnect"},
                    },
                }
            }
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["HTTPBearer"] = {
                "type": "http",
                "scheme": "bearer",
            }
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


async def _heartbeats(hub: Hub) -> None:
    # Checked three times per interval, so a quiet stream hears something within about
    # 1.2 intervals, whatever its phase.
    while True:
        await asyncio.sleep(hub.heartbeat_s / 3)
        hub.heartbeat()
