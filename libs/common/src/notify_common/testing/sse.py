"""A Server-Sent Events client for tests and benchmarks: a raw HTTP/1.1 socket, so a test
controls exactly when it reads (a slow client is one that stops reading) and can cut the
connection at any moment; events are parsed by a reader thread into a queue."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class Event:
    event: str  # "message" when the server named none; "comment" for a comment line
    data: str
    id: str | None
    retry: int | None


class StreamClosed(Exception):
    """The server ended the stream (or the connection dropped)."""


_END = object()


class SSEClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        last_event_id: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        recv_buffer: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        query = urlencode(params or {})
        self.target = (parts.path or "/") + (f"?{query}" if query else "")
        self.headers = {"Host": f"{self.host}:{self.port}", "Accept": "text/event-stream"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if last_event_id:
            self.headers["Last-Event-ID"] = last_event_id
        self.headers.update(headers or {})
        self.recv_buffer = recv_buffer
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.events: queue.Queue[Event | object] = queue.Queue()
        self.ended = threading.Event()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._pending = b""

    # --- connection ----------------------------------------------------------------------
    def connect(self, *, read: bool = True, timeout: float = 10.0) -> SSEClient:
        """Send the request and read the response head; start the reader unless `read` is
        False (the client then reads nothing until `start_reading`)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.recv_buffer is not None:
            # Before connect, so the advertised TCP window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
        sock.settimeout(timeout)
        sock.connect((self.host, self.port))
        head = f"GET {self.target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in self.headers.items()
        )
        sock.sendall(head.encode() + b"\r\n")
        self._sock = sock
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise StreamClosed("connection closed before the response head")
            buf += chunk
        head_bytes, _, rest = buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.response_headers = {
            k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
        }
        self._pending = rest
        if read:
            self.start_reading()
        return self

    def start_reading(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="sse-client", daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Cut the connection (like a closed tab or a lost network)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already closed by the server
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------
    def _read(self) -> None:
        assert self._sock is not None
        raw = self._pending
        body = b""
        chunked = self.response_headers.get("transfer-encoding", "").lower() == "chunked"
        try:
            while True:
                if chunked:
                    # Decode every complete chunk in `raw` (by position: a slow client may
                    # find megabytes waiting, and re-slicing per chunk would be quadratic).
                    pos, parts = 0, [body]
                    while True:
                        line_end = raw.find(b"\r\n", pos)
                        if line_end < 0:
                            break
                        size = int(raw[pos:line_end].split(b";")[0], 16)
                        if size == 0:
                            self._parse(b"".join(parts))
                            return
                        if len(raw) < line_end + 2 + size + 2:
                            break
                        parts.append(raw[line_end + 2 : line_end + 2 + size])
                        pos = line_end + 2 + size + 2
                    body, raw = b"".join(parts), raw[pos:]
                else:
                    body, raw = body + raw, b""
                body = self._parse(body)
                chunks = [raw]
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    return
                chunks.append(chunk)
                raw = b"".join(chunks)
        except OSError:
            return
        finally:
            self.ended.set()
            self.events.put(_END)

    def _parse(self, body: bytes) -> bytes:
        """Queue every complete event in `body`; return the incomplete rest."""
        *blocks, rest = body.split(b"\n\n")
        for raw_block in blocks:
            block = raw_block.decode("utf-8")
            fields: dict[str, list[str]] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.events.put(Event("comment", line[1:].strip(), None, None))
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
            if not fields:
                continue
            retry = fields.get("retry")
            # A block of only `retry:` dispatches nothing in a browser; shown as "retry".
            default = "retry" if retry and "data" not in fields else "message"
            self.events.put(
                Event(
                    event=fields.get("event", [default])[-1],
                    data="\n".join(fields.get("data", [])),
                    id=fields.get("id", [None])[-1],
                    retry=int(retry[-1]) if retry else None,
                )
            )
        return rest

    def next(self, timeout: float = 10.0) -> Event:
        """The next event or comment; StreamClosed when the stream ended first."""
        try:
            item = self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout}s") from None
        if item is _END:
            self.events.put(_END)  # stays ended for later calls
            raise StreamClosed("the stream ended")
        assert isinstance(item, Event)
        return item

    def take(self, kind: str, count: int = 1, *, timeout: float = 10.0) -> list[Event]:
        """The next `count` events of type `kind` (others are skipped)."""
        deadline = time.monotonic() + timeout
        found: list[Event] = []
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(found)} of {count} {kind!r} events within {timeout}s")
            event = self.next(remaining)
            if event.event == kind:
                found.append(event)
        return found

    def drain(self, seconds: float) -> list[Event]:
        """Every event (not comments) that arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        out: list[Event] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                event = self.next(remaining)
            except (TimeoutError, StreamClosed):
                return out
            if event.event != "comment":
                out.append(event)
