"""`notify-ingest`: serve the ingest API (SIGTERM drains in-flight requests, exits 0)."""

from __future__ import annotations

from notify_common import logging as log
from notify_common.http import serve
from notify_common.settings import load
from notify_ingest.app import build_app
from notify_ingest.settings import IngestSettings


def main() -> None:
    settings = load(IngestSettings)
    log.configure(service="ingest", level=settings.log_level, json=settings.log_json)
    serve(build_app(settings), host=settings.http_host, port=settings.ingest_port)


if __name__ == "__main__":
    main()
