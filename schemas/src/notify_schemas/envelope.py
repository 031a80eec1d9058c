"""CloudEvents 1.0 in Kafka binary mode: ce_* headers, the value is the event's JSON data.

`encode` is the one way events are put on Kafka; `decode_headers` the one way they are read.
The fanout's per-recipient fast path builds the same headers without the SDK's per-event
objects; tests check both against the cloudevents SDK's own `from_binary`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel

SPECVERSION = b"1.0"
CONTENT_TYPE = b"application/json"
# Extension attribute carrying the id of the request or upstream event that caused this one,
# so one grep follows a message from the POST to every delivery.
CORRELATION_HEADER = "ce_correlationid"

Headers = list[tuple[str, str | bytes | None]]
# What Kafka clients hand back: a list of pairs (confluent-kafka) or a mapping (aiokafka/Faust).
AnyHeaders = Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


def now() -> datetime:
    return datetime.now(UTC)


def ce_headers(
    *,
    ce_type: str,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    correlation_id: str | None = None,
    subject: str | None = None,
) -> Headers:
    headers: Headers = [
        ("ce_specversion", SPECVERSION),
        ("ce_id", (event_id or str(uuid.uuid4())).encode()),
        ("ce_source", source.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_time", (time or now()).isoformat().encode()),
        ("content-type", CONTENT_TYPE),
    ]
    if subject:
        headers.append(("ce_subject", subject.encode()))
    if correlation_id:
        headers.append((CORRELATION_HEADER, correlation_id.encode()))
    return headers


def encode(
    event: BaseModel,
    *,
    ce_type: str,
    source: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
) -> tuple[bytes, Headers]:
    """Return (value, headers) for one event."""
    value = orjson.dumps(event.model_dump(mode="json", exclude_none=False))
    return value, ce_headers(
        ce_type=ce_type, source=source, event_id=event_id, correlation_id=correlation_id
    )


def header_pairs(headers: AnyHeaders) -> list[tuple[str, str | bytes | None]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def decode_headers(headers: AnyHeaders) -> dict[str, str]:
    """Headers as a dict of str (the last value wins for repeated names)."""
    out: dict[str, str] = {}
    for name, value in header_pairs(headers):
        if isinstance(value, bytes):
            out[name] = value.decode("utf-8", "replace")
        elif value is not None:
            out[name] = value
    return out


def missing_ce_attributes(headers: dict[str, str]) -> Sequence[str]:
    """The required CloudEvents attributes that a message lacks."""
    return [
        name
        for name in ("ce_specversion", "ce_id", "ce_source", "ce_type")
        if not headers.get(name)
    ]
