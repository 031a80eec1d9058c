"""`notify-push-sender`: run the Web Push sender, or `notify-push-sender vapid generate`
to print a fresh VAPID key pair as environment values.

The service refuses to start without a valid NOTIFY_VAPID_PRIVATE_KEY and
NOTIFY_VAPID_SUBJECT (the message names the variable, never the key). SIGTERM stops
consuming, lets pushes in flight finish and be recorded, then exits 0.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from notify_common import logging as log
from notify_common.http import serve
from notify_common.settings import load
from notify_common.webpush import generate_vapid_private_key
from notify_push_sender.app import build_app
from notify_push_sender.settings import PushSenderSettings


def vapid_generate(subject: str) -> str:
    private, public = generate_vapid_private_key()
    return (
        f"# VAPID key pair generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n"
        "# push-sender needs the private key (a secret: store it like a password);\n"
        "# the inbox serves the public key to browsers. Rotation: docs/push.md.\n"
        f"NOTIFY_VAPID_PRIVATE_KEY={private}\n"
        f"NOTIFY_VAPID_PUBLIC_KEY={public}\n"
        f"NOTIFY_VAPID_SUBJECT={subject}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notify-push-sender", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    vapid = commands.add_parser("vapid", help="VAPID key tools")
    vapid_commands = vapid.add_subparsers(dest="vapid_command", required=True)
    generate = vapid_commands.add_parser(
        "generate", help="print a new key pair as NOTIFY_VAPID_* lines"
    )
    generate.add_argument(
        "--subject",
        default="mailto:ops@example.com",
        help="the contact push services may use (mailto: or https:)",
    )
    args = parser.parse_args(argv)
    if args.command == "vapid":
        sys.stdout.write(vapid_generate(args.subject))
        return 0
    settings = load(PushSenderSettings)
    log.configure(service="push-sender", level=settings.log_level, json=settings.log_json)
    serve(build_app(settings), host=settings.http_host, port=settings.push_sender_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
