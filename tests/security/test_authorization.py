"""Two users, Alice and Bob, against the real inbox: Alice can never read or change Bob's
notifications, preferences, push subscriptions or unsubscribe state, and finds nothing of
his (404, never 403, so ids do not leak). The realtime half of the matrix (Alice's stream
never carries Bob's events) is services/realtime/tests/test_integration.py::
test_two_users_connected_each_receives_only_their_own, against the real broker."""

from __future__ import annotations

import base64
import copy
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from notify_common import email_links, webpush
from notify_inbox.app import build_app
from notify_inbox.consumer import persist
from notify_schemas import topics
from notify_schemas.models import NotificationCreated
from notify_schemas.topics import contract_dir

from .conftest import inbox_settings

pytestmark = pytest.mark.integration

A, B = "u-alice", "u-bob"
EXAMPLE = json.loads(
    (contract_dir() / "examples" / topics.NOTIFICATIONS / "1" / "new_message.json").read_text()
)


def store(engine: Engine, user_id: str, n: int) -> list[str]:
    events = []
    for i in range(n):
        data = copy.deepcopy(EXAMPLE)
        data.update(notification_id=str(uuid.uuid4()), user_id=user_id, title=f"{user_id} {i}")
        events.append(NotificationCreated.model_validate(data))
    assert persist(engine, events) == n
    return [str(e.notification_id) for e in events]


def unread(inbox: TestClient, headers: dict[str, str]) -> int:
    resp = inbox.get("/v1/notifications/unread-count", headers=headers)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["unread"])


def test_notifications_are_only_ever_the_callers(inbox: TestClient, engine: Engine, auth) -> None:
    alices = store(engine, A, 2)
    [bobs] = store(engine, B, 1)
    feed = inbox.get("/v1/notifications", headers=auth(A)).json()
    assert sorted(i["notification_id"] for i in feed["items"]) == sorted(alices)
    assert {
        i["notification_id"]
        for i in inbox.get("/v1/notifications", headers=auth(B)).json()["items"]
    } == {bobs}
    # Bob's id, from Alice: not found, whether to read it or unread it.
    for read in (True, False):
        resp = inbox.patch(f"/v1/notifications/{bobs}", json={"read": read}, headers=auth(A))
        assert resp.status_code == 404, resp.text
    # Mark-all-read marks Alice's only.
    assert inbox.post("/v1/notifications/mark-all-read", headers=auth(A)).status_code == 200
    assert unread(inbox, auth(A)) == 0
    assert unread(inbox, auth(B)) == 1
    # The unread filter does not reach across either: Bob still has one unread.
    unread_feed = inbox.get("/v1/notifications", params={"unread_only": "true"}, headers=auth(A))
    assert unread_feed.json()["items"] == []


def test_a_token_for_bob_with_alices_claims_elsewhere_is_still_bob(
    inbox: TestClient, engine: Engine, auth
) -> None:
    [alices] = store(engine, A, 1)
    # Query and body parameters naming another user are not how identity is decided.
    resp = inbox.get("/v1/notifications", params={"user_id": A}, headers=auth(B))
    assert resp.status_code == 200 and resp.json()["items"] == []
    resp = inbox.patch(
        f"/v1/notifications/{alices}", json={"read": True, "user_id": A}, headers=auth(B)
    )
    assert resp.status_code in (404, 422), resp.text
    assert unread(inbox, auth(A)) == 1


def test_preferences_are_per_user(inbox: TestClient, auth) -> None:
    defaults = inbox.get("/v1/preferences", headers=auth(B)).json()
    mine = {"channels": {"in_app": True, "push": False, "email": False}}
    resp = inbox.put("/v1/preferences", json=mine, headers=auth(A))
    assert resp.status_code == 200, resp.text
    assert resp.json()["user_id"] == A
    assert inbox.get("/v1/preferences", headers=auth(A)).json()["channels"]["push"] is False
    assert inbox.get("/v1/preferences", headers=auth(B)).json() == defaults
    # A user_id in the body is refused, not obeyed.
    resp = inbox.put("/v1/preferences", json={**mine, "user_id": B}, headers=auth(A))
    assert resp.status_code == 422
    assert inbox.get("/v1/preferences", headers=auth(B)).json() == defaults

    resp = inbox.put("/v1/channels/c-1/preference", json={"level": "none"}, headers=auth(A))
    assert resp.status_code == 200 and resp.json()["user_id"] == A
    bob_level = inbox.get("/v1/channels/c-1/preference", headers=auth(B)).json()
    assert bob_level["user_id"] == B and bob_level["level"] == "all"


def _browser_keys() -> dict[str, str]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    b64 = base64.urlsafe_b64encode
    return {"p256dh": b64(point).rstrip(b"=").decode(), "auth": b64(os.urandom(16)).decode()}


def _subscription(n: int) -> dict[str, Any]:
    return {"endpoint": f"https://push.example.test/send/{n}", "keys": _browser_keys()}


@pytest.fixture
def push_inbox(
    database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The inbox with Web Push on, a cap of 2 subscriptions per user, and a made-up push
    service host that resolves to a public address (never contacted)."""
    real = webpush.resolve_host
    monkeypatch.setattr(
        webpush,
        "resolve_host",
        lambda host, port: ["142.250.74.10"] if host == "push.example.test" else real(host, port),
    )
    settings = inbox_settings(
        database_url,
        vapid_public_key=webpush.generate_vapid_private_key()[1],
        push_max_subscriptions_per_user=2,
    )
    with TestClient(build_app(settings, engine=engine)) as client:
        yield client


def test_push_subscriptions_are_per_user_and_capped_per_user(push_inbox: TestClient, auth) -> None:
    created = [
        push_inbox.post("/v1/push/subscriptions", json=_subscription(i), headers=auth(A))
        for i in range(2)
    ]
    assert [r.status_code for r in created] == [201, 201]
    alices = [r.json()["id"] for r in created]
    # The per-user cap holds for Alice ...
    over = push_inbox.post("/v1/push/subscriptions", json=_subscription(9), headers=auth(A))
    assert over.status_code == 409 and "at most 2" in over.json()["detail"]
    # ... and Alice's subscriptions do not count against Bob's.
    bobs = push_inbox.post("/v1/push/subscriptions", json=_subscription(7), headers=auth(B))
    assert bobs.status_code == 201, bobs.text
    listed = push_inbox.get("/v1/push/subscriptions", headers=auth(B)).json()["items"]
    assert [s["id"] for s in listed] == [bobs.json()["id"]]
    # Bob cannot delete Alice's; it is not found for him, and still there for her.
    for sid in alices:
        assert push_inbox.delete(f"/v1/push/subscriptions/{sid}", headers=auth(B)).status_code == (
            404
        )
    mine = push_inbox.get("/v1/push/subscriptions", headers=auth(A)).json()["items"]
    assert sorted(s["id"] for s in mine) == sorted(alices)


def test_an_unsubscribe_link_only_ever_unsubscribes_its_own_user(
    inbox: TestClient, engine: Engine, auth
) -> None:
    for user in (A, B):
        digest_on = {"digest": {"enabled": True, "hour_local": 9}}
        assert inbox.put("/v1/preferences", json=digest_on, headers=auth(user)).status_code == 200
    key = email_links.SigningKey(engine).get()
    alices = email_links.sign(key, user_id=A, list_id=email_links.DIGEST_LIST)
    # Alice's token with Bob's user id is refused and changes nothing.
    resp = inbox.post(
        "/v1/email/unsubscribe", params={"user": B, "list": "digest", "token": alices}
    )
    assert resp.status_code == 403
    assert inbox.get("/v1/preferences", headers=auth(B)).json()["digest"]["enabled"] is True
    # Garbage tokens are refused too (a non-ASCII one used to be a 500).
    for token in ("", "x" * 43, "É" * 43, alices[:-1]):
        for method in ("GET", "POST"):
            params = {"user": B, "list": "digest", "token": token}
            assert inbox.request(method, "/v1/email/unsubscribe", params=params).status_code == 403
    # Alice's own link works, for Alice only.
    resp = inbox.post(
        "/v1/email/unsubscribe", params={"user": A, "list": "digest", "token": alices}
    )
    assert resp.status_code == 200, resp.text
    assert inbox.get("/v1/preferences", headers=auth(A)).json()["digest"]["enabled"] is False
    assert inbox.get("/v1/preferences", headers=auth(B)).json()["digest"]["enabled"] is True
