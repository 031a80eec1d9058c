"""A local SMTP server that accepts every mail and keeps it: `make dev`'s mail sink (one
.eml file per mail in a folder) and the tests' SMTP server (in memory).

Never for production: it relays nothing and authenticates no one. It listens on loopback
unless told otherwise.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]+")


@dataclass(frozen=True)
class SinkMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: datetime

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class MailSink:
    """An aiosmtpd server in a background thread.

    `directory`: also write each mail there as an .eml file. `delay_s`: hold the reply
    to DATA this long after the mail was kept (a slow server; a client killed meanwhile
    has delivered a mail it never heard was accepted). `reply`: a function of the mail that
    returns an SMTP reply to give instead of accepting it (e.g. "451 4.3.0 try later").
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1025,
        directory: Path | None = None,
        delay_s: float = 0.0,
        reply: Callable[[SinkMail], str | None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.directory = directory
        self.delay_s = delay_s
        self.reply = reply
        self.mails: list[SinkMail] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> MailSink:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def snapshot(self) -> list[SinkMail]:
        with self._lock:
            return list(self.mails)

    def keep(self, mail: SinkMail) -> None:
        with self._lock:
            self.mails.append(mail)
            self._seq += 1
            seq = self._seq
        if self.directory is not None:
            to = _UNSAFE.sub("_", mail.rcpt_tos[0] if mail.rcpt_tos else "nobody")[:60]
            name = f"{mail.received_at:%Y%m%d-%H%M%S}-{seq:05d}-{to}.eml"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(mail.data)
            tmp.rename(self.directory / name)  # a reader never sees half a file


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        mail = SinkMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=[str(r) for r in envelope.rcpt_tos],
            data=data,
            received_at=datetime.now(UTC),
        )
        if self.sink.reply is not None:
            answer = self.sink.reply(mail)
            if answer is not None:
                return answer
        self.sink.keep(mail)
        if self.sink.delay_s:
            await asyncio.sleep(self.sink.delay_s)
        return "250 2.0.0 OK: kept by the Notify mail sink"


def serve_forever(directory: Path, *, host: str, port: int) -> None:
    """Run the sink until SIGINT/SIGTERM (`notify-email-digest sink`)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sink = MailSink(host=host, port=port, directory=directory.resolve()).start()
    print(
        f"mail sink listening on smtp://{host}:{port}; mail goes to {directory.resolve()}",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        sink.stop()
