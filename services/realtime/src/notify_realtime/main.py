"""`notify-realtime`: serve the SSE stream and run its Kafka consumer.

SIGTERM (or Ctrl-C): stop accepting connections, tell every open stream when to reconnect
(`retry:`, spread at random so the clients of this instance do not all reconnect at once)
and end it, stop the consumer, exit 0. Clients reconnect elsewhere with Last-Event-ID and
resume from the feed, so nothing is lost.
"""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from notify_common import logging as log
from notify_common.settings import load
from notify_realtime.app import RealtimeApp, build_app
from notify_realtime.settings import RealtimeSettings

# How long shutdown waits for streams to end after they were told to; they end at once
# unless a client stops reading, which the write timeout bounds.
_DRAIN_S = 15


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: RealtimeApp) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Uvicorn's own shutdown waits for open responses to finish, and a stream never
        # finishes by itself: end the streams first, then let uvicorn drain.
        self._app.begin_shutdown()
        super().handle_exit(sig, frame)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    # As notify_common.http.serve: uvicorn re-raises the signal after a clean drain with
    # the handlers found at start; exit 0 says the shutdown was orderly.
    raise SystemExit(0)


def main() -> None:
    settings = load(RealtimeSettings)
    log.configure(service="realtime", level=settings.log_level, json=settings.log_json)
    app = build_app(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.realtime_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=_DRAIN_S,
    )
    _Server(config, app).run()


if __name__ == "__main__":
    main()
