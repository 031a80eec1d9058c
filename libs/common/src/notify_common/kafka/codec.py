"""Decoding events off Kafka and dead-letter records: one implementation for the shared
runner and for the Faust fanout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError

from notify_schemas import envelope


class PermanentError(Exception):
    """An event that can never succeed: dead-letter it at once, never retry."""


class InvalidEvent(PermanentError):
    """The message violates the topic's contract (envelope or schema)."""


@dataclass(frozen=True)
class Decoded:
    event: BaseModel | None  # None for a tombstone on a compacted topic
    key: str | None
    headers: dict[str, str]


def decode(
    *,
    model: type[BaseModel] | None,
    key: bytes | None,
    value: bytes | None,
    headers: envelope.AnyHeaders,
    allow_tombstones: bool,
) -> Decoded:
    """Validate envelope and value; raise InvalidEvent with a reason a human can act on."""
    hdrs = envelope.decode_headers(headers)
    text_key = key.decode("utf-8", "replace") if key is not None else None
    if value is None:
        if not allow_tombstones:
            raise InvalidEvent("tombstone on a topic that does not allow them")
        return Decoded(event=None, key=text_key, headers=hdrs)
    missing = envelope.missing_ce_attributes(hdrs)
    if missing:
        raise InvalidEvent(f"missing CloudEvents headers: {', '.join(missing)}")
    if model is None:
        raise InvalidEvent("no model for this topic")
    try:
        event = model.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidEvent(summarize(exc)) from None
    except ValueError as exc:  # not JSON, invalid UTF-8
        raise InvalidEvent(f"undecodable value: {exc}") from None
    return Decoded(event=event, key=text_key, headers=hdrs)


def summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(value)"
        parts.append(f"{loc}: {err['msg']}")
    return "schema violation: " + "; ".join(parts)


def dead_letter_headers(
    *,
    headers: envelope.AnyHeaders,
    topic: str,
    partition: int,
    offset: int,
    group: str,
    exc: BaseException,
    attempts: int,
) -> envelope.Headers:
    """The original headers plus dlq_* headers saying where the message came from and why
    it failed (the inbox admin API lists and requeues by these)."""
    reason = (str(exc) or type(exc).__name__)[:1000]
    out: envelope.Headers = [
        (k, v) for k, v in envelope.header_pairs(headers) if not k.startswith("dlq_")
    ]
    out += [
        ("dlq_original_topic", topic.encode()),
        ("dlq_original_partition", str(partition).encode()),
        ("dlq_original_offset", str(offset).encode()),
        ("dlq_consumer_group", group.encode()),
        ("dlq_error_class", type(exc).__name__.encode()),
        ("dlq_reason", reason.encode()),
        ("dlq_attempts", str(attempts).encode()),
        ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    return out
