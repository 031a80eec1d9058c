"""`notify-email-digest`: run the email service; `notify-email-digest run-digest [--now T]`
to send the digests due at T (default: now) once and exit; `notify-email-digest sink` to
run the local SMTP sink of `make dev`.

The service refuses to start without NOTIFY_DATABASE_URL, NOTIFY_SMTP_URL and
NOTIFY_EMAIL_FROM (the message names the variable, never a credential). SIGTERM stops
consuming, lets the mails in flight finish and be recorded, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from notify_common import logging as log
from notify_common.settings import load
from notify_email_digest.settings import EmailDigestSettings

# Each command imports what it needs only: run-digest (a CronJob, the tests) starts faster
# without the web stack, and the sink without the database and Kafka clients.


def _instant(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_digest(settings: EmailDigestSettings, now: datetime) -> dict[str, object]:
    """One digest run at `now` (every time it records is `now`); returns its summary."""
    from notify_common.db.engine import make_engine
    from notify_common.kafka.producer import EventProducer
    from notify_email_digest.context import Context
    from notify_email_digest.outbox import OutboxPump
    from notify_email_digest.worker import run_digest_once

    engine = make_engine(settings)
    producer = EventProducer(settings)
    try:
        ctx = Context(
            settings=settings,
            engine=engine,
            pump=OutboxPump(engine, producer),
            clock=lambda: now,
        )
        summary = asyncio.run(run_digest_once(ctx))
        return {"now": now.isoformat(), **summary.as_dict()}
    finally:
        producer.close(5)
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notify-email-digest", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    once = commands.add_parser("run-digest", help="send the digests due now (or at --now), once")
    once.add_argument(
        "--now",
        type=_instant,
        default=None,
        help="the time to run at, ISO 8601 (default: the current time; UTC when no offset)",
    )
    sink = commands.add_parser("sink", help="a local SMTP server that saves mail as .eml files")
    sink.add_argument("--dir", default=".state/mail", help="where the .eml files go")
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=1025)
    args = parser.parse_args(argv)

    if args.command == "sink":
        from notify_email_digest.sink import serve_forever

        serve_forever(Path(args.dir), host=args.host, port=args.port)
        return 0
    settings = load(EmailDigestSettings)
    log.configure(service="email-digest", level=settings.log_level, json=settings.log_json)
    if args.command == "run-digest":
        summary = run_digest(settings, args.now or datetime.now(UTC))
        print(json.dumps(summary), flush=True)
        return 0
    from notify_common.http import serve
    from notify_email_digest.app import build_app

    serve(build_app(settings), host=settings.http_host, port=settings.email_digest_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
