"""`notify-inbox`: serve the inbox API and run its feed consumer and outbox relay.

SIGTERM (or Ctrl-C) stops accepting requests, lets the consumer finish and commit the batch
in hand and the relay confirm its batch, then exits 0.
"""

from __future__ import annotations

from notify_common import logging as log
from notify_common.http import serve
from notify_common.settings import load
from notify_inbox.app import build_app
from notify_inbox.settings import InboxSettings


def main() -> None:
    settings = load(InboxSettings)
    log.configure(service="inbox", level=settings.log_level, json=settings.log_json)
    serve(build_app(settings), host=settings.http_host, port=settings.inbox_port)


if __name__ == "__main__":
    main()
