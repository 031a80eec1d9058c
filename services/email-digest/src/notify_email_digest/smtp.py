"""Talking to the SMTP server: the URL, the connection, and what a failure means.

A failure is either temporary (retry later: 4xx replies, a refused or dropped connection, a
timeout, and anything that goes wrong before the mail transaction starts — greeting, EHLO,
STARTTLS, AUTH — because that is the server's or our configuration's problem, not this
message's) or permanent (a 5xx reply to MAIL FROM, RCPT TO or DATA: this message will never
be accepted as it is, so it is failed and dead-lettered).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from notify_common import metrics

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False  # smtps: TLS from the first byte
    start_tls: bool | None = None  # None: upgrade when offered; True: required
    validate_certs: bool = True

    def describe(self) -> str:
        """Where mail goes, without the credentials (for logs and the dev banner)."""
        mode = "smtps" if self.use_tls else "starttls" if self.start_tls else "smtp"
        return f"{mode}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """smtp://[user:pass@]host[:port][?verify=false], smtp+starttls://…, smtps://…"""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("must start with smtp://, smtp+starttls:// or smtps://")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("has an invalid port") from None
    query = parse_qs(parts.query)
    verify = query.get("verify", ["true"])[-1].lower() not in ("false", "0", "no")
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=scheme == "smtps",
        start_tls=True if scheme == "smtp+starttls" else (False if scheme == "smtps" else None),
        validate_certs=verify,
    )


class SendError(Exception):
    """A mail was not accepted. `temporary`: try again later; otherwise never."""

    def __init__(self, reason: str, *, temporary: bool, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason[:500]
        self.temporary = temporary
        self.code = code

    @property
    def status_class(self) -> str:
        """A metric label: 4xx, 5xx, connection or timeout."""
        if self.code is not None:
            return f"{self.code // 100}xx"
        return "timeout" if "timed out" in self.reason else "connection"


def classify(exc: BaseException) -> SendError:
    """Turn whatever aiosmtplib (or the network) raised into a SendError."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # One recipient per mail: its reply decides.
        codes = [r.code for r in exc.recipients] or [550]
        code = max(codes)
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients) or str(exc)
        return SendError(f"recipient refused: {text}", temporary=code < 500, code=code)
    if isinstance(
        exc,
        aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPDataError | aiosmtplib.SMTPRecipientRefused,
    ):
        code = exc.code
        return SendError(f"{code} {exc.message}", temporary=code < 500, code=code)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return SendError(f"timed out: {exc}", temporary=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # Greeting, EHLO, STARTTLS, AUTH: the server's or our configuration's problem.
        return SendError(f"{exc.code} {exc.message}", temporary=True, code=exc.code)
    # Connection refused or dropped, TLS failures, and anything unforeseen: retried, and
    # dead-lettered with this reason once the attempts run out.
    return SendError(f"{type(exc).__name__}: {exc}", temporary=True)


class Mailer:
    """One SMTP connection, opened on first use and reused while it lasts.

    Not safe for concurrent use: one sender task owns one Mailer.
    """

    def __init__(self, target: SmtpTarget, *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._smtp: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        t = self.target
        smtp = aiosmtplib.SMTP(
            hostname=t.host,
            port=t.port,
            username=t.username,
            password=t.password,
            use_tls=t.use_tls,
            start_tls=t.start_tls,
            validate_certs=t.validate_certs,
            timeout=self.timeout,
        )
        await smtp.connect()
        return smtp

    async def send(self, message: bytes, *, sender: str, recipient: str) -> None:
        """Send one mail (its bytes, as compose.to_bytes makes them) to one recipient: the
        envelope names only `recipient`, whatever the headers say. Raise SendError when it
        was not accepted."""
        started = time.perf_counter()
        reused = self._smtp is not None and self._smtp.is_connected
        try:
            try:
                if not reused:
                    await self.close()
                    self._smtp = await self._connect()
                assert self._smtp is not None
                await self._smtp.sendmail(sender, [recipient], message)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # The server closed an idle connection we kept: once more on a fresh one.
                await self.close()
                self._smtp = await self._connect()
                await self._smtp.sendmail(sender, [recipient], message)
        except Exception as exc:
            # After a failure the session's state is unknown: start the next on a new one.
            await self.close()
            raise classify(exc) from exc
        finally:
            metrics.EMAIL_SMTP_DURATION.observe(time.perf_counter() - started)

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await smtp.quit()
        except Exception:
            smtp.close()
