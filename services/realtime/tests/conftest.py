"""Factories shared by the realtime tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from notify_realtime import sse
from notify_realtime.hub import Record

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"


def notification(user_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "notification_id": str(uuid.uuid4()),
        "user_id": user_id,
        "type": "NEW_MESSAGE",
        "title": "New message in Rustaceans #general",
        "body": "Alice: hello",
        "action_url": "/servers/s-42/channels/c-general",
        "metadata": {"message_id": "m-1", "server_id": "s-42", "is_mentioned": False},
        "priority": "normal",
        "critical": False,
        "channels": ["in_app", "push"],
        "created_at": datetime.now(UTC).isoformat(),
    }
    data.update(overrides)
    return data


def record(user_id: str, **overrides: Any) -> Record:
    return Record(
        kind=sse.NOTIFICATION,
        user_id=user_id,
        value=orjson.dumps(notification(user_id, **overrides)),
        timestamp=None,
    )


@pytest.fixture
def anyio_backend() -> str:
    # The service runs on asyncio (uvicorn); its tests do too.
    return "asyncio"
