"""Structured JSON logs (structlog) with a correlation id bound per request or event."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars

_SECRET_KEYS = ("password", "secret", "token", "authorization", "private_key", "database_url")


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Defence in depth: no log line carries a value under a secret-looking key, whatever
    # a caller passed by mistake.
    for key in list(event_dict):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event_dict[key] = "**redacted**"
    return event_dict


def configure(*, service: str, level: str = "INFO", json: bool = True) -> None:
    def add_service(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        # Not a context variable: threads (consumers, senders) do not inherit those, and
        # every line must say which service wrote it.
        event_dict.setdefault("service", service)
        return event_dict

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Third-party libraries log through stdlib logging: keep them quiet unless they warn.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def bind_correlation(correlation_id: str | None) -> None:
    if correlation_id:
        bind_contextvars(correlation_id=correlation_id)


def clear_request_context(service: str) -> None:
    clear_contextvars()
    bind_contextvars(service=service)
