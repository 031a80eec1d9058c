"""`notify-fanout`: run one Faust worker of the fanout."""

from __future__ import annotations

import sys

from notify_common import logging as log
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import load
from notify_fanout.app import build
from notify_fanout.settings import FanoutSettings


def main() -> None:
    settings = load(FanoutSettings)
    log.configure(service="fanout", level=settings.log_level, json=settings.log_json)
    # The fanout's joins depend on partition counts: never let a topic be auto-created.
    ensure_topics(settings)
    app = build(settings)
    level = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn"}.get(settings.log_level, "info")
    sys.argv = [sys.argv[0], "worker", "--loglevel", level]
    app.main()


if __name__ == "__main__":
    main()
