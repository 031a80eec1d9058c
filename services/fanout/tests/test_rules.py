"""The eligibility rules and the notification shape, with no broker."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from notify_common.templates import TemplateError, TemplateRegistry
from notify_fanout.directory import Directory, MemberIndex, apply_membership
from notify_fanout.rules import Fanout, Suppressed, notification_id, preview
from notify_schemas.models import (
    AnnouncementRequested,
    MessageCreated,
    NotificationCreated,
    User,
    notification_id_for,
)


def user(uid: str, **kw) -> dict:
    return User(user_id=uid, display_name=uid, **kw).model_dump(mode="json")


@pytest.fixture
def world():
    users = {
        "sender": user("sender", entitled=True),
        "admin": user("admin", is_admin=True),
        "paid": user("paid", entitled=True),
        "free": user("free"),
        "muted": user("muted", entitled=True),
        "mentions_only": user("mentions_only", entitled=True),
        "no_channels": user(
            "no_channels",
            entitled=True,
            channels={"in_app": False, "push": False, "email": False},
        ),
        "push_only_pref": user("push_only_pref", entitled=True),
    }
    levels = {"muted/c1": "none", "mentions_only/c1": "mentions"}
    prefs = {"push_only_pref": {"channels": {"in_app": False, "push": True, "email": False}}}
    index = MemberIndex()
    table: dict[str, str] = {}
    for uid in [*users, "ghost"]:
        apply_membership(table, index, server_id="s1", user_id=uid, active=True, role="member")
    return Directory(users=users, channel_levels=levels, user_prefs=prefs, members=index)


def message(**kw) -> MessageCreated:
    base = {
        "message_id": "m1",
        "server_id": "s1",
        "channel_id": "c1",
        "sender_id": "sender",
        "sender_name": "Sender",
        "content": "hello",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "server_name": "Srv",
        "channel_name": "general",
    }
    return MessageCreated(**{**base, **kw})


def run(directory: Directory, msg: MessageCreated) -> tuple[dict[str, dict], Suppressed]:
    out: dict[str, dict] = {}
    suppressed = Suppressed()

    def emit(uid: str, nid: str, value: bytes) -> None:
        assert uid not in out, "one notification per recipient"
        out[uid] = json.loads(value)
        assert out[uid]["notification_id"] == nid

    Fanout(directory).message(msg, emit, suppressed)
    return out, suppressed


def test_plain_message_reaches_exactly_the_eligible_members(world):
    out, suppressed = run(world, message())
    assert set(out) == {"admin", "paid", "push_only_pref"}
    assert suppressed.counts() == Counter(
        sender=1,
        not_entitled=1,
        channel_muted=1,
        not_mentioned=1,
        all_channels_off=1,
        unknown_user=1,
    )


def test_every_suppressed_candidate_is_named_with_its_reason(world):
    """The suppression log: each member who is not told, once, with why; the sender is
    never a candidate (only counted) and a recipient is never listed."""
    out, suppressed = run(world, message())
    assert sorted(suppressed.users) == [
        ("free", "not_entitled"),
        ("ghost", "unknown_user"),
        ("mentions_only", "not_mentioned"),
        ("muted", "channel_muted"),
        ("no_channels", "all_channels_off"),
    ]
    assert suppressed.sender == 1
    assert not {uid for uid, _ in suppressed.users} & set(out)
    # Mentioned, the mentions-only member is told; the muted one still is not.
    out, suppressed = run(world, message(mentions=["mentions_only", "muted"]))
    assert "mentions_only" in out
    assert dict(suppressed.users)["muted"] == "channel_muted"
    assert "mentions_only" not in dict(suppressed.users)


def test_nobody_suppressed_leaves_the_log_empty(world):
    for uid in ("free", "muted", "mentions_only", "no_channels", "ghost"):
        apply_membership({}, world.members, server_id="s1", user_id=uid, active=False, role="")
    out, suppressed = run(world, message())
    assert set(out) == {"admin", "paid", "push_only_pref"}
    assert suppressed.users == [] and suppressed.counts() == Counter(sender=1)


def test_mentions_reach_mentions_only_users_and_raise_priority(world):
    out, _ = run(world, message(mentions=["mentions_only", "free"]))
    assert "mentions_only" in out and "free" not in out  # entitlement still applies
    n = out["mentions_only"]
    assert n["type"] == "MENTION" and n["priority"] == "high"
    assert n["metadata"]["is_mentioned"] is True
    assert out["paid"]["type"] == "NEW_MESSAGE" and out["paid"]["priority"] == "normal"


def test_everyone_mention_counts_for_everyone_but_not_for_muted(world):
    out, _ = run(world, message(mention_everyone=True))
    assert {"mentions_only", "paid", "admin"} <= set(out)
    assert "muted" not in out and "sender" not in out


def test_user_preferences_override_upstream_channel_toggles(world):
    out, _ = run(world, message())
    assert out["push_only_pref"]["channels"] == ["push"]
    assert out["paid"]["channels"] == ["in_app", "push", "email"]


def test_recipient_timezone_and_quiet_hours_travel_with_the_notification(world):
    night = {"start": "22:00", "end": "07:00"}
    world.users["paid"] = user("paid", entitled=True, timezone="Asia/Tokyo", quiet_hours=night)
    world.users["admin"] = user("admin", is_admin=True, quiet_hours=night)
    # The user's own preferences win, including "no quiet hours" over the upstream window.
    world.user_prefs["admin"] = {"channels": {}, "quiet_hours": None}
    out, _ = run(world, message())
    paid = NotificationCreated.model_validate(out["paid"])
    assert paid.timezone == "Asia/Tokyo"
    assert paid.quiet_hours is not None and paid.quiet_hours.start == "22:00"
    assert out["admin"]["quiet_hours"] is None and out["admin"]["timezone"] == "UTC"
    announced: dict[str, dict] = {}
    Fanout(world).announcement(
        AnnouncementRequested(
            announcement_id="a1",
            title="t",
            body="b",
            user_ids=["paid"],
            created_at=datetime.now(UTC),
        ),
        lambda uid, _nid, value: announced.__setitem__(uid, json.loads(value)),
        Suppressed(),
    )
    assert announced["paid"]["quiet_hours"] == night
    assert announced["paid"]["timezone"] == "Asia/Tokyo"


def test_notification_matches_the_contract(world):
    long = "word " * 60
    out, _ = run(world, message(content=long))
    n = NotificationCreated.model_validate(out["paid"])
    assert n.title == "New message in Srv #general"
    assert n.body == preview("Sender", long) and n.body.endswith("…")
    assert len(n.body) == len("Sender: ") + 100 + 1
    assert n.action_url == "/servers/s1/channels/c1"
    assert n.notification_id == notification_id_for("m1", "paid")


def test_fast_notification_id_equals_uuid5():
    for source, uid in [("m1", "u1"), ("ä-ß", "ü"), ("x" * 128, "y" * 128)]:
        assert uuid.UUID(notification_id(source, uid)) == notification_id_for(source, uid)


def test_left_members_are_not_notified(world):
    table = {}
    apply_membership(
        table, world.members, server_id="s1", user_id="paid", active=False, role="member"
    )
    out, _ = run(world, message())
    assert "paid" not in out


def test_member_index_rebuilds_from_table_keys():
    index = MemberIndex()
    index.rebuild(["s1/a", "s1/b", "s2/a"])
    assert index.members("s1") == {"a", "b"} and index.members("s2") == {"a"}
    index.remove("s2", "a")
    assert index.members("s2") == set() and len(index) == 2


def test_announcement_to_users_skips_unknown_and_deduplicates(world):
    ann = AnnouncementRequested(
        announcement_id="a1",
        title="Hi",
        body="All hands",
        user_ids=["free", "free", "nobody"],
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        critical=True,
    )
    out: dict[str, dict] = {}
    suppressed = Suppressed()
    Fanout(world).announcement(ann, lambda u, n, v: out.setdefault(u, json.loads(v)), suppressed)
    assert set(out) == {"free"}  # entitlement does not gate announcements
    assert out["free"]["type"] == "ADMIN_ANNOUNCEMENT" and out["free"]["critical"] is True
    assert suppressed.users == [("nobody", "unknown_user")]
    assert suppressed.counts() == Counter(unknown_user=1)
    NotificationCreated.model_validate(out["free"])


def test_text_and_buttons_come_from_the_recipients_template(world):
    world.users["paid"] = user("paid", entitled=True, locale="fr-CA")
    out, _ = run(world, message(mentions=["admin"], content="  look\nhere  "))
    mention = NotificationCreated.model_validate(out["admin"])
    assert mention.title == "Sender mentioned you in Srv #general"
    assert mention.body == "look here"
    assert [(a.label, a.url, a.action) for a in mention.actions] == [
        ("Reply", "/servers/s1/channels/c1?reply=m1", None),
        ("Mark as read", None, "mark_read"),
    ]
    french = NotificationCreated.model_validate(out["paid"])
    assert french.title == "Nouveau message dans Srv #general"
    assert french.body == "Sender : look here"
    assert french.actions[0].label == "Ouvrir"


def test_a_deployers_template_replaces_the_shipped_one(world, tmp_path):
    (tmp_path / "NEW_MESSAGE.en.yaml").write_text(
        'title: "{{ sender_name }} in #{{ channel_name }}"\nbody: "{{ preview }}"\n'
    )
    out: dict[str, dict] = {}
    Fanout(world, TemplateRegistry.load(tmp_path)).message(
        message(), lambda uid, _nid, v: out.__setitem__(uid, json.loads(v)), Suppressed()
    )
    n = NotificationCreated.model_validate(out["paid"])
    assert (n.title, n.body, n.action_url, n.actions) == ("Sender in #general", "hello", None, [])


def test_announcement_text_is_the_operators_through_the_template(world):
    out: dict[str, dict] = {}
    Fanout(world).announcement(
        AnnouncementRequested(
            announcement_id="a1",
            title="Maintenance",
            body="Down at 2am",
            user_ids=["paid"],
            created_at=datetime.now(UTC),
        ),
        lambda uid, _nid, v: out.__setitem__(uid, json.loads(v)),
        Suppressed(),
    )
    n = NotificationCreated.model_validate(out["paid"])
    assert (n.title, n.body, n.action_url, n.actions) == ("Maintenance", "Down at 2am", None, [])


def test_a_template_that_cannot_render_raises_instead_of_sending_placeholders(world, tmp_path):
    (tmp_path / "ADMIN_ANNOUNCEMENT.en.yaml").write_text(
        'title: "{{ title }}"\nbody: "see {{ action_url }}"\n'
    )
    with pytest.raises(TemplateError, match="'action_url' has no value"):
        Fanout(world, TemplateRegistry.load(tmp_path)).announcement(
            AnnouncementRequested(
                announcement_id="a1",
                title="T",
                body="B",
                user_ids=["paid"],
                created_at=datetime.now(UTC),
            ),
            lambda *_: None,
            Suppressed(),
        )
