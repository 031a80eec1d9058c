"""What every Notify HTTP app shares: health, readiness, metrics, RED metrics, body and header
limits, correlation ids and JSON error bodies."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import orjson
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notify_common import logging as log
from notify_common import metrics

ReadinessCheck = Callable[[], Awaitable[str | None]]  # returns a problem, or None when ready

CORRELATION_HEADER = "X-Request-ID"


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, whether or not Content-Length is sent,
    and JSON bodies that only Python's lenient parser accepts with 400 (`_lenient_only`)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_413(send, self.max_bytes)
                    return
        # Read the (bounded) body before the app runs: an exception raised from inside the app's
        # receive is turned into a 400 by FastAPI's body parsing, so a chunked body over the
        # limit must be refused here, before any handler sees it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away before sending the whole body: nothing to answer.
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await _send_413(send, self.max_bytes)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        problem = _lenient_only(whole) if whole and _is_json(scope) else None
        if problem is not None:
            error = {"loc": ["body"], "msg": problem, "type": "json_invalid"}
            await _send_error(
                send, 400, orjson.dumps({"detail": "malformed JSON body", "errors": [error]})
            )
            return
        replayed = False

        async def replay_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay_receive, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _lenient_only(body: bytes) -> str | None:
    """Why a body that Python's json module accepts is refused anyway, else None.

    json.loads takes lone surrogates (escaped, or invalid UTF-8 read with surrogatepass), a
    byte order mark, NaN and Infinity. pydantic passes such strings on, and they fail later
    where text must be UTF-8 (PostgreSQL, Kafka consumers, response rendering) as a 500.
    orjson follows RFC 8259 strictly. Bodies neither parser accepts are left to the app, so
    each service reports malformed JSON in its usual way."""
    try:
        orjson.loads(body)
        return None
    except orjson.JSONDecodeError as exc:
        strict_error = str(exc)
    try:
        json.loads(body)
    except Exception:  # malformed (or too deep) for Python's parser too: the app's to report
        return None
    return strict_error


class HeaderLimitMiddleware:
    """Refuse requests whose target and headers together exceed `max_bytes` with 431.

    The server is not relied on for this: h11 (uvicorn) only bounds headers that arrive in
    pieces, so a large header block sent at once reaches the app whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            if size > self.max_bytes:
                await _send_error(
                    send,
                    431,
                    b'{"detail":"request headers too large","limit_bytes":'
                    + str(self.max_bytes).encode()
                    + b"}",
                )
                return
        await self.app(scope, receive, send)


async def _send_413(send: Send, limit: int) -> None:
    body = b'{"detail":"request body too large","limit_bytes":' + str(limit).encode() + b"}"
    await _send_error(send, 413, body)


async def _send_error(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ObserveMiddleware:
    """Correlation id (X-Request-ID in, echoed out, bound to every log line of the request)
    and the RED metrics per route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                correlation_id = value.decode("latin-1")
        if not correlation_id or len(correlation_id) > 128:
            correlation_id = str(uuid.uuid4())
        log.clear_request_context(self.service)
        log.bind_correlation(correlation_id)
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        header = (b"x-request-id", correlation_id.encode("latin-1"))
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(
                service=self.service, route=template, method=method, status=f"{status // 100}xx"
            ).inc()
            metrics.HTTP_DURATION.labels(
                service=self.service, route=template, method=method
            ).observe(time.perf_counter() - started)


def create_app(
    *,
    service: str,
    title: str,
    readiness: list[ReadinessCheck] | None = None,
    max_body_bytes: int = 64 * 1024,
    max_header_bytes: int = 16 * 1024,
    **kwargs: Any,
) -> FastAPI:
    app = FastAPI(title=title, **kwargs)
    checks = readiness if readiness is not None else []
    app.state.readiness = checks

    # Added first, so it runs inside `observe`: refused bodies are counted and carry the
    # request id like every other response.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(HeaderLimitMiddleware, max_bytes=max_header_bytes)

    # Pure ASGI (Starlette's BaseHTTPMiddleware costs about a millisecond per request).
    app.add_middleware(ObserveMiddleware, service=service)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        problems = [p for p in [await check() for check in checks] if p]
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    # Uvicorn handles SIGTERM/SIGINT while it serves (the graceful drain), then raises the
    # signal again with the handlers found at start, i.e. this one. By then the shutdown was
    # clean, and exit status 0 tells the orchestrator so instead of "killed by SIGTERM".
    # Before uvicorn serves, it ends the process at once: nothing has started yet.
    raise SystemExit(0)


def serve(app: FastAPI, *, host: str, port: int, drain_s: int = 10) -> None:
    """Run an app under uvicorn until SIGTERM/SIGINT; drain, then exit 0."""
    import uvicorn

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=drain_s,
    )
