"""GET /v1/stream: the user's notifications, read-state changes and unread count as SSE.

A plain ASGI endpoint rather than a FastAPI route: the shared HTTP middleware (RED metrics,
correlation ids) is a BaseHTTPMiddleware, which copies every chunk of a streaming response
through an in-memory channel and adds tasks per request; with ten thousand mostly idle
streams per process that overhead would dominate. Streams have their own metrics instead.

A stream's life:
1. authenticate (bearer header, or `?token=` because EventSource cannot set headers);
2. register with the hub (from here on the user's live events are queued);
3. send the reconnection delay (`retry:`) and, when resuming (Last-Event-ID header or
   `?last_event_id=`), replay what was missed from the feed;
4. send the unread count, then the queued and live events, with heartbeats while idle;
5. end when the client leaves, falls too far behind (`resync`), or the server shuts down
   (a `retry:` hint, then the end of the response).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import orjson
import sqlalchemy.exc
from starlette.types import Receive, Scope, Send

from notify_common import logging as log
from notify_common import metrics
from notify_common.auth import AuthError, bearer, verify_user_token
from notify_common.ratelimit import RateLimiter, user_key
from notify_realtime import sse
from notify_realtime.feedstore import FeedStore
from notify_realtime.hub import Connection, Control, Hub
from notify_realtime.recent import RecentIndex
from notify_realtime.resume import backfill
from notify_realtime.settings import RealtimeSettings

logger = log.get(__name__)

PATH = "/v1/stream"

_SENT = {
    kind: metrics.REALTIME_EVENTS_SENT.labels(type=kind)
    for kind in (sse.NOTIFICATION, sse.READ, sse.UNREAD_COUNT, sse.RESYNC)
}
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx and some other proxies buffer responses unless told not to.
    (b"x-accel-buffering", b"no"),
]
# How long live copies of replayed notifications are looked out for: they arrive as soon
# as this instance's consumer reaches them, normally within milliseconds.
_SKIP_WINDOW_S = 60.0


class StreamEndpoint:
    def __init__(
        self,
        *,
        settings: RealtimeSettings,
        hub: Hub,
        recent: RecentIndex,
        store: FeedStore,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.recent = recent
        self.store = store
        # Opening a stream counts against the user's request budget (shared with the inbox).
        self.limiter = limiter
        self.origins = settings.cors_origins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        cors = self._cors(headers.get("origin"))
        method = scope["method"]
        if method == "OPTIONS":
            await self._preflight(send, headers, cors)
            return
        if method != "GET":
            await _respond(send, 405, {"detail": "method not allowed"}, [(b"allow", b"GET")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = bearer(headers.get("authorization")) or _first(query, "token")
        if not token:
            await _unauthorized(send, cors, "a user token is required (Bearer header or ?token=)")
            return
        try:
            principal = verify_user_token(self.settings, token)
        except AuthError as exc:
            await _unauthorized(send, cors, str(exc))
            return
        if self.limiter is not None:
            decision = await self.limiter.ahit(user_key(principal.user_id))
            if not decision.allowed:
                refused = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
                await _respond(send, 429, {"detail": decision.detail()}, [*cors, *refused])
                return
        if self.hub.closing:
            await _respond(
                send, 503, {"detail": "shutting down; reconnect"}, [*cors, (b"retry-after", b"1")]
            )
            return
        # The header wins: EventSource sends it on its own reconnects, with a newer id than
        # the query parameter the page put in the URL when it first connected.
        last_event_id = headers.get("last-event-id") or _first(query, "last_event_id")
        await self._stream(send, receive, cors, principal.user_id, last_event_id)

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None or origin.rstrip("/") not in self.origins:
            return []
        return [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]

    async def _preflight(
        self, send: Send, headers: dict[str, str], cors: list[tuple[bytes, bytes]]
    ) -> None:
        if not cors or headers.get("access-control-request-method") != "GET":
            await _respond(send, 403, {"detail": "origin or method not allowed"})
            return
        extra = [
            *cors,
            (b"access-control-allow-methods", b"GET"),
            (b"access-control-allow-headers", b"authorization, last-event-id, cache-control"),
            (b"access-control-max-age", b"600"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": extra})
        await send({"type": "http.response.body", "body": b""})

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        cors: list[tuple[bytes, bytes]],
        user_id: str,
        last_event_id: str | None,
    ) -> None:
        conn = self.hub.connect(user_id)
        task = asyncio.current_task()
        conn.task = task
        watcher: asyncio.Task[None] | None = None
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS + cors}
            )
            await self._write(send, conn, sse.retry(self.settings.realtime_retry_ms))
            watcher = asyncio.create_task(_watch(receive, conn))
            skip_until = 0.0
            if last_event_id:
                replay = await backfill(
                    store=self.store,
                    recent=self.recent,
                    user_id=user_id,
                    last_event_id=last_event_id,
                    limit=self.settings.realtime_backfill_max,
                    wait_s=self.settings.realtime_resume_wait_s,
                )
                if replay.frames:
                    await self._write(send, conn, b"".join(replay.frames))
                    _SENT[sse.NOTIFICATION].inc(len(replay.frames))
                conn.skip_ids = replay.notification_ids
                skip_until = time.monotonic() + _SKIP_WINDOW_S
                if replay.resync:
                    metrics.REALTIME_RESYNCS.labels(reason=replay.resync).inc()
                    conn.end(Control.RESYNC, replay.resync)
            if not conn.ended:
                unread = await self._unread(user_id)
                if unread is not None:
                    await self._write(send, conn, sse.unread_count_frame(unread))
                    _SENT[sse.UNREAD_COUNT].inc()
            await self._pump(send, conn, skip_until)
        except asyncio.CancelledError:
            if conn.abandoned and task is not None:
                # Our own cancellation (the client would not read): end quietly; the
                # server closes the connection since the response is incomplete.
                task.uncancel()
                return
            raise
        finally:
            self.hub.disconnect(conn)
            if watcher is not None:
                watcher.cancel()

    async def _unread(self, user_id: str) -> int | None:
        try:
            return await asyncio.to_thread(self.store.unread_count, user_id=user_id)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            # The count is a convenience: the stream works without it.
            logger.warning("unread count unavailable", error=type(exc).__name__)
            return None

    async def _pump(self, send: Send, conn: Connection, skip_until: float) -> None:
        sent: Counter[str] = Counter()
        while True:
            items = await conn.mailbox.take()
            if conn.skip_ids and time.monotonic() > skip_until:
                conn.skip_ids = frozenset()
            chunks: list[bytes] = []
            stamps: list[float] = []
            final: Control | None = None
            for item in items:
                if isinstance(item, Control):
                    if item is Control.HEARTBEAT:
                        conn.heartbeat_pending = False
                        chunks.append(sse.HEARTBEAT)
                        continue
                    final = item
                    break
                if item.notification_id is not None and item.notification_id in conn.skip_ids:
                    continue  # already replayed from the feed
                chunks.append(item.frame)
                sent[item.kind] += 1
                if item.timestamp is not None:
                    stamps.append(item.timestamp)
            if chunks:
                await self._write(send, conn, b"".join(chunks))
                now = time.time()
                for stamp in stamps:
                    metrics.REALTIME_SEND_LATENCY.observe(max(0.0, now - stamp))
                for kind, n in sent.items():
                    _SENT[kind].inc(n)
                    if kind == sse.READ:
                        _SENT[sse.UNREAD_COUNT].inc(n)  # a read event carries the count
                sent.clear()
            if final is None:
                continue
            if final is Control.CLOSED:
                return
            if final is Control.RESYNC:
                retry_ms = self.settings.realtime_retry_ms
                await self._write(send, conn, sse.resync_frame(conn.end_reason, retry_ms))
                _SENT[sse.RESYNC].inc()
            elif final is Control.SHUTDOWN:
                spread = self.settings.realtime_shutdown_retry_spread_ms
                await self._write(send, conn, sse.retry(250 + random.randint(0, spread)))  # noqa: S311 - jitter
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return

    async def _write(self, send: Send, conn: Connection, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})
        conn.last_write = time.monotonic()


async def _watch(receive: Receive, conn: Connection) -> None:
    """Wake the stream when the client goes away (otherwise noticed only at the next write)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if conn.ended:
                conn.mailbox.force(Control.CLOSED)
            else:
                conn.end(Control.CLOSED)
            return


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


async def _respond(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _unauthorized(send: Send, cors: list[tuple[bytes, bytes]], detail: str) -> None:
    await _respond(send, 401, {"detail": detail}, [*cors, (b"www-authenticate", b"Bearer")])
