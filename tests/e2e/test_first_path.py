"""The first real path: directory through ingest, preferences through inbox, messages
posted; every eligible member — and nobody else — finds exactly one notification."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Stack, wait_until

pytestmark = pytest.mark.e2e

SERVER = "srv-1"
CHANNEL = "general"

# user_id: (is_admin, entitled)
USERS = {
    "sender": (False, True),
    "admin": (True, False),
    "paid": (False, True),
    "free": (False, False),
    "muted": (False, True),
    "mentions-only": (False, True),
    "leaver": (False, True),
    "outsider": (False, True),
    "quiet-channels": (False, True),
}
MEMBERS = [u for u in USERS if u != "outsider"]


def message(mid: str, **kw) -> dict:
    return {
        "message_id": mid,
        "server_id": SERVER,
        "channel_id": CHANNEL,
        "sender_id": "sender",
        "sender_name": "Sender",
        "content": f"content of {mid}",
        "server_name": "Server One",
        "channel_name": CHANNEL,
        **kw,
    }


def feed(stack: Stack, user_id: str) -> list[dict]:
    items: list[dict] = []
    cursor = None
    with stack.user(user_id) as c:
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            r = c.get("/v1/notifications", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items


@pytest.fixture(scope="module")
def directory(stack: Stack) -> Stack:
    with stack.ingest() as ingest:
        for uid, (admin, entitled) in USERS.items():
            r = ingest.put(
                f"/v1/users/{uid}",
                json={"display_name": uid.title(), "is_admin": admin, "entitled": entitled},
            )
            assert r.status_code == 202, r.text
        for uid in MEMBERS:
            assert ingest.put(f"/v1/servers/{SERVER}/members/{uid}", json={}).status_code == 202
        assert ingest.delete(f"/v1/servers/{SERVER}/members/leaver").status_code == 202
    with stack.user("muted") as c:
        assert c.put(f"/v1/channels/{CHANNEL}/preference", json={"level": "none"}).is_success
    with stack.user("mentions-only") as c:
        r = c.put(f"/v1/channels/{CHANNEL}/preference", json={"level": "mentions"})
        assert r.is_success, r.text
    with stack.user("quiet-channels") as c:
        r = c.put(
            "/v1/preferences",
            json={
                "channels": {"in_app": False, "push": False, "email": False},
                "quiet_hours": None,
                "digest": {"enabled": False, "hour_local": 9},
            },
        )
        assert r.is_success, r.text
    # The fanout is eventually consistent with the directory: wait until it has applied
    # every change (what an upstream app would do before a demo, not in production).
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="users"') == len(USERS)
        ),
        timeout=60,
        what="users in the fanout",
    )
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
            == len(MEMBERS) - 1
        ),
        timeout=60,
        what="members in the fanout",
    )
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="channel_levels"') == 2
        ),
        timeout=60,
        what="channel preferences in the fanout",
    )
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_table_entries", 'table="user_prefs"') == 1,
        timeout=60,
        what="user preferences in the fanout",
    )
    return stack


EXPECTED = {
    # m-plain: no mentions; m-mention: mentions "mentions-only" and "free"; m-everyone.
    "sender": set(),
    "admin": {"m-plain", "m-mention", "m-everyone"},
    "paid": {"m-plain", "m-mention", "m-everyone"},
    "free": set(),  # neither admin nor entitled, even when mentioned
    "muted": set(),  # level none, even for @everyone
    "mentions-only": {"m-mention", "m-everyone"},
    "leaver": set(),
    "outsider": set(),
    "quiet-channels": set(),  # every delivery channel switched off
}


def test_each_user_finds_exactly_the_expected_notifications(directory: Stack):
    stack = directory
    with stack.ingest() as ingest:
        for body in (
            message("m-plain"),
            message("m-mention", mentions=["mentions-only", "free"]),
            message("m-everyone", mention_everyone=True),
        ):
            assert ingest.post("/v1/messages", json=body).status_code == 202
        # Re-posting the same message_id changes nothing downstream.
        assert ingest.post("/v1/messages", json=message("m-plain")).status_code == 202
    total = sum(len(v) for v in EXPECTED.values())
    reposted = len([u for u, e in EXPECTED.items() if "m-plain" in e])
    # The re-post is fanned out again (same notification ids) and the feed absorbs it.
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_recipients_total") == total + reposted,
        timeout=60,
        what="the fanout's output",
    )
    wait_until(
        lambda: (
            stack.metric("inbox", "notify_inbox_persisted_total")
            + stack.metric("inbox", "notify_inbox_duplicates_total")
            == total + reposted
        ),
        timeout=60,
        what="the inbox to consume every notification",
    )
    assert stack.metric("inbox", "notify_inbox_persisted_total") == total
    assert stack.metric("inbox", "notify_inbox_duplicates_total") == reposted

    for uid, expected in EXPECTED.items():
        items = feed(stack, uid)
        got = [n["metadata"]["message_id"] for n in items]
        assert sorted(got) == sorted(expected), uid  # exactly once each
        for n in items:
            assert n["user_id"] == uid
            assert n["action_url"] == f"/servers/{SERVER}/channels/{CHANNEL}"
            # Text from the shipped templates (notify_common/templates/defaults).
            if n["type"] == "MENTION":
                assert n["title"] == f"Sender mentioned you in Server One #{CHANNEL}"
            else:
                assert n["title"] == f"New message in Server One #{CHANNEL}"
    by_id = {n["metadata"]["message_id"]: n for n in feed(stack, "mentions-only")}
    assert by_id["m-mention"]["type"] == "MENTION"
    assert by_id["m-mention"]["priority"] == "high"
    assert {n["type"] for n in feed(stack, "paid")} == {"NEW_MESSAGE", "MENTION"}

    with stack.user("paid") as c:
        assert c.get("/v1/notifications/unread-count").json()["unread"] == 3


def test_suppressions_are_counted_by_reason(directory: Stack):
    stack = directory
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_suppressed_total", 'reason="sender"') >= 3,
        timeout=30,
        what="suppressions",
    )
    assert stack.metric("fanout", "notify_fanout_suppressed_total", 'reason="not_entitled"') >= 3
    assert stack.metric("fanout", "notify_fanout_suppressed_total", 'reason="channel_muted"') >= 3
    assert stack.metric("fanout", "notify_fanout_suppressed_total", 'reason="not_mentioned"') >= 1
