"""The feed API against a real PostgreSQL: pagination, read state, ownership, auth."""

from __future__ import annotations

import base64
import uuid

import pytest

from notify_common.auth import issue_user_token
from notify_inbox.consumer import persist
from notify_inbox.feed import encode_cursor
from notify_inbox.settings import InboxSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def store(engine, notification):
    """Persist `n` notifications for a user (one batch, in order); return their ids."""

    def add(user_id: str, n: int) -> list[str]:
        events = [notification(user_id, title=f"{user_id} #{i}") for i in range(n)]
        assert persist(engine, events) == n
        return [str(e.notification_id) for e in events]

    return add


def fetch_all(api, headers, *, limit, **params):
    """Every page of the feed: (ids in order, number of pages)."""
    ids, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        resp = api.get("/v1/notifications", params=query, headers=headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages += 1
        ids += [item["notification_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages


def test_pages_hold_every_notification_once_newest_first(api, auth, store):
    stored = store("u-carol", 45)
    store("u-dave", 3)  # someone else's never shows up
    ids, pages = fetch_all(api, auth("u-carol"), limit=20)
    assert pages == 3
    assert ids == list(reversed(stored))


def test_notifications_arriving_while_paging_do_not_shift_later_pages(api, auth, store):
    stored = store("u-carol", 45)
    newest_first = list(reversed(stored))
    headers = auth("u-carol")

    first = api.get("/v1/notifications", params={"limit": 20}, headers=headers).json()
    assert [i["notification_id"] for i in first["items"]] == newest_first[:20]
    arrived = store("u-carol", 3)

    second = api.get(
        "/v1/notifications", params={"limit": 20, "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert [i["notification_id"] for i in second["items"]] == newest_first[20:40]
    third = api.get(
        "/v1/notifications", params={"limit": 20, "cursor": second["next_cursor"]}, headers=headers
    ).json()
    assert [i["notification_id"] for i in third["items"]] == newest_first[40:]
    assert third["next_cursor"] is None

    # The newcomers are at the top of a fresh first page.
    fresh = api.get("/v1/notifications", params={"limit": 3}, headers=headers).json()
    assert [i["notification_id"] for i in fresh["items"]] == list(reversed(arrived))


def test_a_redelivered_notification_keeps_its_place_and_read_state(api, auth, engine, notification):
    first, second = notification("u-carol"), notification("u-carol")
    assert persist(engine, [first, second]) == 2
    headers = auth("u-carol")
    api.patch(f"/v1/notifications/{first.notification_id}", json={"read": True}, headers=headers)

    assert persist(engine, [first, second, first]) == 0

    items = api.get("/v1/notifications", headers=headers).json()["items"]
    assert [(i["notification_id"], i["read"]) for i in items] == [
        (str(second.notification_id), False),
        (str(first.notification_id), True),
    ]


def test_an_item_carries_the_notification(api, auth, engine, notification):
    event = notification("u-carol", critical=True, channels=["in_app", "email"])
    persist(engine, [event])
    [item] = api.get("/v1/notifications", headers=auth("u-carol")).json()["items"]
    assert item["title"] == event.title
    assert item["body"] == event.body
    assert item["action_url"] == event.action_url
    assert item["metadata"]["message_id"] == event.metadata.message_id
    assert item["metadata"]["is_mentioned"] is False
    assert item["critical"] is True
    assert item["channels"] == ["in_app", "email"]
    assert item["read"] is False
    assert item["read_at"] is None


def test_read_state_unread_filter_and_count(api, auth, store):
    ids = store("u-carol", 5)
    store("u-dave", 2)
    headers = auth("u-carol")

    def unread_count():
        resp = api.get("/v1/notifications/unread-count", headers=headers)
        assert resp.status_code == 200
        return resp.json()["unread"]

    assert unread_count() == 5
    resp = api.patch(f"/v1/notifications/{ids[1]}", json={"read": True}, headers=headers)
    assert resp.status_code == 200
    assert resp.json()["read"] is True
    assert resp.json()["read_at"] is not None
    api.patch(f"/v1/notifications/{ids[3]}", json={"read": True}, headers=headers)
    assert unread_count() == 3

    unread, _ = fetch_all(api, headers, limit=2, unread_only="true")
    assert unread == [ids[4], ids[2], ids[0]]

    resp = api.patch(f"/v1/notifications/{ids[1]}", json={"read": False}, headers=headers)
    assert resp.json()["read"] is False
    assert resp.json()["read_at"] is None
    assert unread_count() == 4

    resp = api.post("/v1/notifications/mark-all-read", headers=headers)
    assert resp.json() == {"updated": 4}
    assert unread_count() == 0
    assert api.post("/v1/notifications/mark-all-read", headers=headers).json() == {"updated": 0}
    # Only the caller's notifications were marked.
    assert api.get("/v1/notifications/unread-count", headers=auth("u-dave")).json() == {"unread": 2}


def test_marking_read_again_keeps_the_first_read_time(api, auth, store):
    [nid] = store("u-carol", 1)
    headers = auth("u-carol")
    first = api.patch(f"/v1/notifications/{nid}", json={"read": True}, headers=headers).json()
    again = api.patch(f"/v1/notifications/{nid}", json={"read": True}, headers=headers).json()
    assert again["read_at"] == first["read_at"]


def test_another_users_notification_is_not_found(api, auth, store):
    [theirs] = store("u-dave", 1)
    resp = api.patch(f"/v1/notifications/{theirs}", json={"read": True}, headers=auth("u-carol"))
    assert resp.status_code == 404
    resp = api.patch(
        f"/v1/notifications/{uuid.uuid4()}", json={"read": True}, headers=auth("u-carol")
    )
    assert resp.status_code == 404
    # Dave's notification is untouched.
    assert api.get("/v1/notifications/unread-count", headers=auth("u-dave")).json() == {"unread": 1}


def test_bad_bodies_and_limits_are_rejected(api, auth, store):
    [nid] = store("u-carol", 1)
    headers = auth("u-carol")
    assert api.patch(f"/v1/notifications/{nid}", json={}, headers=headers).status_code == 422
    assert (
        api.patch(f"/v1/notifications/{nid}", json={"read": "maybe"}, headers=headers).status_code
        == 422
    )
    assert (
        api.patch("/v1/notifications/not-a-uuid", json={"read": True}, headers=headers).status_code
        == 422
    )
    for limit in (0, 101):
        resp = api.get("/v1/notifications", params={"limit": limit}, headers=headers)
        assert resp.status_code == 422


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        base64.urlsafe_b64encode(b"v1:twelve").decode(),
        base64.urlsafe_b64encode(b"v9:12").decode(),
        base64.urlsafe_b64encode(b"v1:-5").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_not_issued_by_the_api_is_a_bad_request(api, auth, cursor):
    resp = api.get("/v1/notifications", params={"cursor": cursor}, headers=auth("u-carol"))
    assert resp.status_code == 400
    assert resp.json()["detail"].startswith("invalid cursor")


def test_cursor_is_opaque_and_round_trips(api, auth, store):
    store("u-carol", 3)
    cursor = api.get("/v1/notifications", params={"limit": 1}, headers=auth("u-carol")).json()[
        "next_cursor"
    ]
    assert cursor and "=" not in cursor and not cursor.isdigit()
    assert encode_cursor(10**17) != encode_cursor(10**17 + 1)


@pytest.mark.parametrize(
    "path", ["/v1/notifications", "/v1/notifications/unread-count", "/v1/preferences"]
)
def test_requests_without_a_valid_token_are_unauthorized(api, db_settings, path):
    wrong_secret = InboxSettings(
        database_url=db_settings.database_url, jwt_secret="another-secret-long-enough-for-hs256"
    )
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": f"Bearer {issue_user_token(db_settings, 'u-carol', ttl_s=-3600)}"},
        {"Authorization": f"Bearer {issue_user_token(wrong_secret, 'u-carol')}"},
    ):
        resp = api.get(path, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["WWW-Authenticate"] == "Bearer"
