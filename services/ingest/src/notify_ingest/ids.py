"""Event ids of what ingest publishes: a message's or announcement's ce_id is derived from
its own id, so a re-post (or a scheduled announcement released twice after a crash) is the
same event to every consumer and yields the same notification ids downstream."""

from __future__ import annotations

import uuid

EVENT_NAMESPACE = uuid.UUID("0b5cc3a6-2b4e-5d8e-8f0e-6e6f74696679")


def message_event_id(message_id: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"message:{message_id}"))


def announcement_event_id(announcement_id: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"announcement:{announcement_id}"))
