"""Read-state changes are announced through the outbox, in the transaction that made them."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from notify_inbox.consumer import persist
from notify_schemas import topics
from notify_schemas.models import ReadStateChanged

pytestmark = pytest.mark.integration


def outbox_events(engine) -> list[ReadStateChanged]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT value, headers FROM outbox WHERE topic = :t ORDER BY id"),
            {"t": topics.READ_STATE},
        ).all()
    events = []
    for value, headers in rows:
        assert headers["ce_type"] == "io.notify.ReadStateChanged"
        event = ReadStateChanged.model_validate_json(value)
        assert headers["ce_id"] == str(event.change_id)
        events.append(event)
    return events


def test_marking_one_read_announces_it_with_the_new_unread_count(api, auth, engine, notification):
    events = [notification("u-carol") for _ in range(3)]
    persist(engine, events)
    target = str(events[0].notification_id)
    resp = api.patch(f"/v1/notifications/{target}", json={"read": True}, headers=auth("u-carol"))
    assert resp.status_code == 200
    [change] = outbox_events(engine)
    assert change.user_id == "u-carol"
    assert change.scope == "one" and str(change.notification_id) == target
    assert change.read is True and change.unread_count == 2

    api.patch(f"/v1/notifications/{target}", json={"read": False}, headers=auth("u-carol"))
    assert [(c.read, c.unread_count) for c in outbox_events(engine)][-1] == (False, 3)


def test_mark_all_read_is_one_event_and_nothing_is_announced_for_no_change(
    api, auth, engine, notification
):
    persist(engine, [notification("u-carol") for _ in range(5)])
    assert api.post("/v1/notifications/mark-all-read", headers=auth("u-carol")).json() == {
        "updated": 5
    }
    [change] = outbox_events(engine)
    assert change.scope == "all" and change.notification_id is None
    assert change.unread_count == 0
    # Nothing left to mark, an unknown id, someone else's: no event.
    api.post("/v1/notifications/mark-all-read", headers=auth("u-carol"))
    api.patch(f"/v1/notifications/{uuid.uuid4()}", json={"read": True}, headers=auth("u-carol"))
    assert len(outbox_events(engine)) == 1
