"""A local push service for tests, the benchmark and manual trials (RFC 8030, HTTP only).

Each subscriber gets an endpoint http://127.0.0.1:PORT/push/<token> and a real P-256 key
pair with an auth secret, exactly what a browser would hand to the inbox. The receiver
stores every push it accepts, checks its VAPID Authorization (ES256 signature with the
key in `k=`, aud = this origin, exp in the future and at most 12 h away) and decrypts the
aes128gcm body with the subscriber's private key through http_ece, an implementation
independent of push-sender's.

Responses are scripted per subscriber (`script`): a status, an optional Retry-After, an
optional delay before answering (a timeout for the sender). `hold()` keeps every answer
back until `release()`: a push counts as delivered only once it is answered, and an
answer whose client has gone (killed) is not counted, like a push service that never
got to accept it.

No TLS: push-sender admits plain http only for hosts listed in NOTIFY_PUSH_DEV_HOSTS.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify_common.testing.infra import free_port


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Reply:
    status: int = 201
    retry_after: str | None = None
    delay_s: float = 0.0


@dataclass
class Subscriber:
    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    # Replies to give, in order; the last one repeats.
    script: list[Reply] = field(default_factory=lambda: [Reply()])

    @property
    def p256dh(self) -> str:
        return _b64(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def subscription(self) -> dict[str, Any]:
        """What PushSubscription.toJSON() gives in a browser."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": _b64(self.auth)},
        }


@dataclass
class PushRequest:
    token: str
    at: float  # time.monotonic() when it arrived
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    answered: bool  # False: the client had gone before the answer (not delivered)
    vapid_error: str | None = None  # None: the Authorization checked out
    vapid_claims: dict[str, Any] | None = None
    message: dict[str, Any] | None = None  # decrypted JSON (when decryption is on)
    decrypt_error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.answered and 200 <= self.status < 300


class PushReceiver:
    """An HTTP push service on 127.0.0.1, run in a thread of the test process."""

    def __init__(self, *, verify: bool = True, max_jwt_lifetime_s: int = 12 * 3600) -> None:
        self.verify = verify
        self.max_jwt_lifetime_s = max_jwt_lifetime_s
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.subscribers: dict[str, Subscriber] = {}
        self.requests: list[PushRequest] = []
        self.count = 0  # requests answered 2xx (cheap to read in benchmarks)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._waiting = 0
        # An outage: until this monotonic time, every push is answered from _outage_replies
        # in turn (each subscriber's own script resumes afterwards).
        self._outage_until = 0.0
        self._outage_replies: list[Reply] = []
        self._outage_next = 0

    # --- subscribers ------------------------------------------------------------------
    def subscribe(
        self, token: str | None = None, *, script: list[Reply] | None = None
    ) -> Subscriber:
        token = token or f"s{len(self.subscribers)}-{time.monotonic_ns()}"
        sub = Subscriber(
            token=token,
            endpoint=f"{self.origin}/push/{token}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            script=list(script or [Reply()]),
        )
        self.subscribers[token] = sub
        return sub

    def received(self, token: str | None = None) -> list[PushRequest]:
        with self._lock:
            return [r for r in self.requests if token is None or r.token == token]

    def delivered(self, token: str | None = None) -> list[PushRequest]:
        return [r for r in self.received(token) if r.delivered]

    # --- outages ---------------------------------------------------------------------------
    def fail_for(self, seconds: float, replies: list[Reply]) -> None:
        """Answer every push with `replies` in turn (e.g. 500, 429 + Retry-After) for the
        next `seconds`, as a push service in trouble would."""
        self._outage_replies = list(replies)
        self._outage_next = 0
        self._outage_until = time.monotonic() + seconds

    @property
    def failing(self) -> bool:
        return time.monotonic() < self._outage_until

    # --- holding answers back ------------------------------------------------------------
    def hold(self) -> None:
        assert self._loop is not None and self._gate is not None
        self._loop.call_soon_threadsafe(self._gate.clear)

    def release(self) -> None:
        assert self._loop is not None and self._gate is not None
        self._loop.call_soon_threadsafe(self._gate.set)

    @property
    def waiting(self) -> int:
        """Requests held back by `hold()` right now."""
        return self._waiting

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> PushReceiver:
        self._thread = threading.Thread(target=self._run, name="push-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("push receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> PushReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._gate = asyncio.Event()
        self._gate.set()
        self._stop = asyncio.Event()
        server = web.Server(self._handle)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    # --- one push -------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        token = request.path.rsplit("/", 1)[-1]
        sub = self.subscribers.get(token)
        body = await request.read()
        if sub is None:
            return web.Response(status=404)
        if self.failing:
            reply = self._outage_replies[self._outage_next % len(self._outage_replies)]
            self._outage_next += 1
        else:
            reply = sub.script.pop(0) if len(sub.script) > 1 else sub.script[0]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        assert self._gate is not None
        if not self._gate.is_set():
            self._waiting += 1
            try:
                await self._gate.wait()
            finally:
                self._waiting -= 1
        transport = request.transport
        answered = transport is not None and not transport.is_closing()
        headers = dict(request.headers.items())
        record = PushRequest(
            token=token,
            at=time.monotonic(),
            headers=headers,
            body=body,
            status=reply.status,
            answered=answered,
        )
        if self.verify:
            self._check(record, sub)
        with self._lock:
            self.requests.append(record)
            if record.delivered:
                self.count += 1
        extra = {"Retry-After": reply.retry_after} if reply.retry_after else {}
        if 200 <= reply.status < 300:
            extra["Location"] = f"{self.origin}/message/{len(self.requests)}"
        return web.Response(status=reply.status, headers=extra)

    def _check(self, record: PushRequest, sub: Subscriber) -> None:
        record.vapid_error, record.vapid_claims = self.check_vapid(
            record.headers.get("Authorization", "")
        )
        try:
            plain = http_ece.decrypt(
                record.body,
                private_key=sub.private_key,
                auth_secret=sub.auth,
                version="aes128gcm",
            )
            record.message = orjson.loads(plain)
        except Exception as exc:
            record.decrypt_error = f"{type(exc).__name__}: {exc}"

    def check_vapid(self, header: str) -> tuple[str | None, dict[str, Any] | None]:
        """(problem or None, claims) of an Authorization header per RFC 8292."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "not the vapid scheme", None
        values = {}
        for part in params.split(","):
            name, _, value = part.strip().partition("=")
            values[name] = value
        if "t" not in values or "k" not in values:
            return "t= or k= missing", None
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(values["k"]))
            claims = jwt.decode(
                values["t"],
                key,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp", "sub"]},
            )
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}", None
        if claims["exp"] > time.time() + self.max_jwt_lifetime_s + 60:
            return "exp more than 12 h away", claims
        sub = str(claims.get("sub", ""))
        if not (sub.startswith("mailto:") or sub.startswith("https:")):
            return "sub is not a mailto: or https: contact", claims
        return None, claims
