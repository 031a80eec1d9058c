"""The HTTP/1.1 client push-sender sends with: one request shape (a POST of a few kilobytes,
a small answer), kept-alive connections pooled per push service origin, and the endpoint
policy applied to every address it connects to.

Why not a general client: a push is one small POST, and the general clients' per-request
machinery cost more than the message's encryption (measured here: aiohttp 220-270 µs of
CPU per request, this client 55-65 µs). What a general client offers beyond that, push
sending must not use anyway: redirects are never followed, proxies from the environment
never apply (the policy must see the real peer), cookies and decompression are irrelevant.

Answers are parsed for what push-sender needs: the status, Retry-After, and enough of the
body (Content-Length, chunked, or up to the close) to keep the connection usable. Bodies
beyond MAX_BODY are not read: the connection is closed instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from notify_common.webpush import EndpointPolicy

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024
# Connections idle longer than this are not reused: servers close idle keep-alive
# connections after their own timeout (often 60 s or more), and a request written into a
# connection the server is closing fails for nothing.
IDLE_REUSE_S = 30.0
DNS_TTL_S = 60.0


class BlockedAddress(OSError):
    """The endpoint policy refused every address of the host (never a transient error)."""


class ProtocolError(OSError):
    """The answer was not HTTP/1.1 as expected."""


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None


@dataclass(frozen=True)
class Target:
    """Where a URL's requests go: scheme, host, port and the request target."""

    tls: bool
    host: str
    port: int
    path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        default = port == (443 if tls else 80)
        netloc = f"[{host}]" if ":" in host else host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(tls, host, port, path, netloc if default else f"{netloc}:{port}")

    @property
    def key(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.used_at = time.monotonic()
        self.requests = 0
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _more(self) -> None:
        if self.closed:
            raise ConnectionResetError("the push service closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # one exchange
    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send the request, read the answer; (answer, whether the connection is reusable).
        Raises OSError when the connection fails before the answer is complete."""
        assert self.transport is not None
        self.requests += 1
        self.buffer.clear()
        self.transport.write(request)
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError("response head too large")
            await self._more()
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        lines = head.split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ProtocolError("invalid status code") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and status_line[0] == "HTTP/1.1"
        keep = await self._skip_body(status, headers) and keep
        self.used_at = time.monotonic()
        return Answer(status, headers.get("retry-after")), keep

    async def _skip_body(self, status: int, headers: dict[str, str]) -> bool:
        """Consume the body; False when the connection cannot carry another request."""
        if status in (204, 304) or 100 <= status < 200:
            return True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._skip_chunked()
        length = headers.get("content-length")
        if length is None:
            return False  # delimited by the close: never reused
        try:
            remaining = int(length)
        except ValueError:
            raise ProtocolError("invalid Content-Length") from None
        if remaining > MAX_BODY:
            return False
        while len(self.buffer) < remaining:
            await self._more()
        del self.buffer[:remaining]
        return True

    async def _skip_chunked(self) -> bool:
        seen = 0
        while True:
            end = self.buffer.find(b"\r\n")
            while end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise ProtocolError("chunk header too large")
                await self._more()
                end = self.buffer.find(b"\r\n")
            try:
                size = int(bytes(self.buffer[:end]).split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError("invalid chunk size") from None
            del self.buffer[: end + 2]
            if size == 0:
                # Trailers (usually none) end with an empty line.
                while True:
                    end = self.buffer.find(b"\r\n")
                    while end < 0:
                        await self._more()
                        end = self.buffer.find(b"\r\n")
                    line = bytes(self.buffer[:end])
                    del self.buffer[: end + 2]
                    if not line:
                        return True
            seen += size
            if seen > MAX_BODY:
                return False
            while len(self.buffer) < size + 2:
                await self._more()
            del self.buffer[: size + 2]


@dataclass
class _Pool:
    idle: deque[_Connection] = field(default_factory=deque)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


class PushClient:
    """Pooled HTTP/1.1 POSTs to push services. Use from one event loop."""

    def __init__(
        self,
        *,
        policy: EndpointPolicy,
        per_origin: int,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.per_origin = per_origin
        self.timeout_s = timeout_s
        self.ssl = ssl_context or ssl.create_default_context()
        self._pools: dict[tuple[bool, str, int], _Pool] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, Any]]]] = {}
        self.opened = 0  # connections opened (tests check the reuse)

    def _pool(self, target: Target) -> _Pool:
        pool = self._pools.get(target.key)
        if pool is None:
            pool = self._pools[target.key] = _Pool(slots=asyncio.Semaphore(self.per_origin))
        return pool

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST and return the answer. Raises TimeoutError, BlockedAddress, OSError."""
        target = Target.parse(url)
        head = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        pool = self._pool(target)
        async with asyncio.timeout(self.timeout_s), pool.slots:
            conn, reused = self._idle(pool), True
            if conn is None:
                conn, reused = await self._connect(target), False
            try:
                answer, keep = await conn.exchange(request)
            except (ConnectionError, ProtocolError) as exc:
                conn.close()
                if not reused or conn.buffer or isinstance(exc, ProtocolError):
                    raise
                # A kept-alive connection the server had closed meanwhile, with nothing of
                # an answer: the request was not taken. Once more on a fresh connection.
                conn = await self._connect(target)
                answer, keep = await conn.exchange(request)
            except BaseException:
                conn.close()  # cancelled or timed out mid-exchange: the state is unknown
                raise
            if keep and not conn.closed:
                pool.idle.append(conn)
            else:
                conn.close()
            return answer

    def _idle(self, pool: _Pool) -> _Connection | None:
        now = time.monotonic()
        while pool.idle:
            conn = pool.idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.used_at < IDLE_REUSE_S:
                return conn
            conn.close()
        return None

    async def _addresses(self, host: str, port: int) -> list[tuple[int, Any]]:
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[tuple[int, Any]] = [(int(info[0]), info[4]) for info in infos]
        self._dns[(host, port)] = (time.monotonic() + DNS_TTL_S, found)
        return found

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        addresses = await self._addresses(target.host, target.port)
        # The connect-time guard: the addresses actually connected to, whatever the URL
        # said and whatever DNS answered at save time.
        allowed = [(f, a) for f, a in addresses if self.policy.address_allowed(str(a[0]))]
        if not allowed:
            raise BlockedAddress("the host resolves only to addresses the policy refuses")
        last: OSError | None = None
        for family, sockaddr in allowed:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, sockaddr)
                _, protocol = await loop.create_connection(
                    _Connection,
                    sock=sock,
                    ssl=self.ssl if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            self.opened += 1
            return protocol
        assert last is not None
        raise last

    def close(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let the transports finish closing
