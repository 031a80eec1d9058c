"""What a notification becomes as a push, and when quiet hours hold it (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from notify_push_sender import message
from notify_schemas.models import NotificationCreated, QuietHours

ICON, BADGE = "/app/push/icon-192.png", "/app/push/badge-72.png"


def n(**kw) -> NotificationCreated:
    data = {
        "notification_id": "3b0f7a9e-6f0c-5d1e-9c44-1f2a3b4c5d6e",
        "user_id": "u-carol",
        "type": "NEW_MESSAGE",
        "title": "New message in Rustaceans #general",
        "body": "Alice: Hello everyone",
        "action_url": "/servers/s-42/channels/c-general",
        "metadata": {
            "message_id": "m-1",
            "server_id": "s-42",
            "channel_id": "c-general",
            "sender_id": "u-alice",
            "sender_name": "Alice",
            "is_mentioned": False,
        },
        "priority": "normal",
        "channels": ["push"],
        "created_at": "2026-11-22T09:00:00Z",
    }
    data.update(kw)
    return NotificationCreated.model_validate(data)


def test_payload_is_the_first_customers_shape():
    c = message.content(n(), icon=ICON, badge=BADGE)
    assert orjson.loads(c.payload) == {
        "title": "New message in Rustaceans #general",
        "body": "Alice: Hello everyone",
        "icon": ICON,
        "badge": BADGE,
        "data": {
            "url": "/servers/s-42/channels/c-general",
            "notification_id": "3b0f7a9e-6f0c-5d1e-9c44-1f2a3b4c5d6e",
            "type": "NEW_MESSAGE",
            "timestamp": int(datetime(2026, 11, 22, 9, tzinfo=UTC).timestamp() * 1000),
        },
        "requireInteraction": False,
        "tag": "channel:s-42/c-general",
        "renotify": True,
    }
    assert c.urgency == "normal" and not c.trimmed


def test_mentions_require_interaction_are_urgent_and_never_replaced():
    mention = n(type="MENTION", priority="high", metadata={"server_id": "s", "is_mentioned": True})
    c = message.content(mention, icon=ICON, badge=BADGE)
    body = orjson.loads(c.payload)
    assert body["requireInteraction"] is True
    assert c.urgency == "high"
    assert body["tag"] == f"notification:{mention.notification_id}"
    other = n(type="MENTION", notification_id=str(uuid.uuid4()), metadata={"is_mentioned": True})
    assert message.topic(mention) != message.topic(other)


def test_plain_messages_of_one_channel_share_a_topic_that_fits_rfc8030():
    a, b = n(), n(notification_id=str(uuid.uuid4()))
    assert message.topic(a) == message.topic(b)
    assert message.topic(a) != message.topic(n(metadata={"server_id": "s", "channel_id": "x"}))
    topic = message.topic(a)
    assert topic is not None and len(topic) <= 32
    assert set(topic) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "normal"),
        ({"critical": True}, "high"),
        ({"priority": "high"}, "high"),
        ({"priority": "low"}, "low"),
        ({"type": "ADMIN_ANNOUNCEMENT"}, "low"),
        ({"type": "SYSTEM"}, "low"),
        ({"type": "ADMIN_ANNOUNCEMENT", "critical": True, "priority": "high"}, "high"),
    ],
)
def test_urgency(overrides, expected):
    assert message.urgency(n(**overrides)) == expected


def test_a_long_body_is_trimmed_to_fit_one_record_never_refused():
    long = n(body="ü" * 5000)  # 2 bytes each in UTF-8
    c = message.content(long, icon=ICON, badge=BADGE)
    assert c.trimmed
    assert len(c.payload) <= message.MAX_PLAINTEXT
    assert len(c.payload) > message.MAX_PLAINTEXT - 8  # as much of the body as fits
    body = orjson.loads(c.payload)
    assert body["body"].endswith("…") and body["body"].startswith("üüü")
    assert body["title"] == long.title  # the body goes first


def test_json_escapes_are_counted_too():
    c = message.content(n(body='"\\\n' * 3000), icon=ICON, badge=BADGE)
    assert len(c.payload) <= message.MAX_PLAINTEXT
    assert orjson.loads(c.payload)["body"].endswith("…")


def test_a_huge_title_is_cut_once_the_body_is_gone():
    c = message.content(n(title="T" * 6000, body="short"), icon=ICON, badge=BADGE)
    body = orjson.loads(c.payload)
    assert len(c.payload) <= message.MAX_PLAINTEXT
    assert body["body"] == "" and body["title"].startswith("TTT")


def test_url_base_makes_action_urls_absolute():
    msg = message.message(n(), icon=ICON, badge=BADGE, url_base="https://chat.example.com/")
    assert msg["data"]["url"] == "https://chat.example.com/servers/s-42/channels/c-general"
    assert message.message(n(action_url=None), icon=ICON, badge=BADGE)["data"]["url"] == "/"


NIGHT = QuietHours(start="22:00", end="07:30")


@pytest.mark.parametrize(
    ("utc_now", "tz", "expected"),
    [
        # Paris is UTC+1 in November: 23:15 local is inside, ends 07:30 local next day.
        ("2026-11-22T22:15:00Z", "Europe/Paris", "2026-11-23T06:30:00+00:00"),
        # 01:00 local (after midnight) is inside, ends the same morning.
        ("2026-11-23T00:00:00Z", "Europe/Paris", "2026-11-23T06:30:00+00:00"),
        # 07:30 local is the end: outside.
        ("2026-11-23T06:30:00Z", "Europe/Paris", None),
        ("2026-11-22T12:00:00Z", "Europe/Paris", None),
        # The same instant is 07:15 in Tokyo: the window ends in 15 minutes.
        ("2026-11-22T22:15:00Z", "Asia/Tokyo", "2026-11-22T22:30:00+00:00"),
        # and 13:00 UTC is 22:00 in Tokyo: the window starts.
        ("2026-11-22T13:00:00Z", "Asia/Tokyo", "2026-11-22T22:30:00+00:00"),
        ("2026-11-22T12:59:00Z", "Asia/Tokyo", None),
        # An unknown zone is taken as UTC.
        ("2026-11-22T23:00:00Z", "Mars/Olympus", "2026-11-23T07:30:00+00:00"),
        # DST: Paris moves to UTC+2 on 2026-03-29; a night spanning it ends at 05:30 UTC.
        ("2026-03-28T23:00:00Z", "Europe/Paris", "2026-03-29T05:30:00+00:00"),
    ],
)
def test_quiet_until(utc_now, tz, expected):
    got = message.quiet_until(NIGHT, tz, datetime.fromisoformat(utc_now))
    assert (got.isoformat() if got else None) == expected


def test_daytime_windows_and_empty_windows():
    day = QuietHours(start="09:00", end="17:00")
    at = datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert message.quiet_until(day, "UTC", at) == datetime(2026, 11, 22, 17, tzinfo=UTC)
    assert message.quiet_until(day, "UTC", datetime(2026, 11, 22, 8, tzinfo=UTC)) is None
    assert message.quiet_until(QuietHours(start="09:00", end="09:00"), "UTC", at) is None
    assert message.quiet_until(None, "UTC", at) is None


def test_template_buttons_become_actions_with_their_targets():
    c = message.content(
        n(
            actions=[
                {"label": "Reply", "url": "/servers/s-42/channels/c-general?reply=m-1"},
                {"label": "Mark as read", "action": "mark_read"},
            ]
        ),
        icon=ICON,
        badge=BADGE,
        url_base="https://chat.example",
    )
    msg = orjson.loads(c.payload)
    assert msg["actions"] == [
        {"action": "a0", "title": "Reply"},
        {"action": "a1", "title": "Mark as read"},
    ]
    assert msg["data"]["actions"] == {
        "a0": "https://chat.example/servers/s-42/channels/c-general?reply=m-1",
        # API actions open the notification center on the worker's own origin.
        "a1": "/app/?mark_read=3b0f7a9e-6f0c-5d1e-9c44-1f2a3b4c5d6e",
    }
