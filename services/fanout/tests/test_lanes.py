"""Lane routing (docs/decisions/0010-priority-lanes.md): critical and high-priority
notifications (mentions are high) go to the priority lane, everything else to the bulk lane;
each recipient gets exactly one notification, on exactly one lane."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from notify_fanout.directory import Directory, MemberIndex, apply_membership
from notify_fanout.rules import Fanout, Suppressed, on_priority_lane
from notify_schemas.models import AnnouncementRequested, MessageCreated, User

BULK, PRIORITY = "bulk", "priority"


@pytest.fixture
def world() -> Directory:
    users = {
        uid: User(user_id=uid, display_name=uid, entitled=True).model_dump(mode="json")
        for uid in ("sender", "ann", "bob", "cyd")
    }
    index = MemberIndex()
    table: dict[str, str] = {}
    for uid in users:
        apply_membership(table, index, server_id="s1", user_id=uid, active=True, role="member")
    return Directory(users=users, channel_levels={}, user_prefs={}, members=index)


class Lanes:
    def __init__(self) -> None:
        self.out: dict[str, tuple[str, dict]] = {}

    def _to(self, lane: str):
        def emit(uid: str, nid: str, value: bytes) -> None:
            assert uid not in self.out, "one notification per recipient"
            self.out[uid] = (lane, json.loads(value))

        return emit

    def lane_of(self) -> dict[str, str]:
        return {uid: lane for uid, (lane, _) in self.out.items()}


def send_message(world: Directory, **kw) -> Lanes:
    lanes = Lanes()
    msg = MessageCreated(
        message_id="m1",
        server_id="s1",
        channel_id="c1",
        sender_id="sender",
        sender_name="Sender",
        content="hello",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **kw,
    )
    Fanout(world).message(msg, lanes._to(BULK), Suppressed(), lanes._to(PRIORITY))
    return lanes


def send_announcement(world: Directory, **kw) -> Lanes:
    lanes = Lanes()
    ann = AnnouncementRequested(
        announcement_id="a1",
        title="Hi",
        body="All hands",
        server_id="s1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **kw,
    )
    Fanout(world).announcement(ann, lanes._to(BULK), Suppressed(), lanes._to(PRIORITY))
    return lanes


def test_the_lane_rule():
    assert on_priority_lane("high", False)
    assert on_priority_lane("normal", True) and on_priority_lane("low", True)
    assert not on_priority_lane("normal", False)
    assert not on_priority_lane("low", False)


def test_a_plain_message_is_bulk_and_its_mentions_are_priority(world):
    lanes = send_message(world, mentions=["bob"])
    assert lanes.lane_of() == {"ann": BULK, "bob": PRIORITY, "cyd": BULK}
    assert all(
        n["priority"] == ("high" if lane == PRIORITY else "normal")
        for lane, n in lanes.out.values()
    )


def test_everyone_mentions_and_high_priority_messages_are_priority(world):
    assert set(send_message(world, mention_everyone=True).lane_of().values()) == {PRIORITY}
    assert set(send_message(world, priority="high").lane_of().values()) == {PRIORITY}
    assert set(send_message(world, priority="low").lane_of().values()) == {BULK}


def test_announcements_take_one_lane_by_priority_and_criticality(world):
    bulk = send_announcement(world)
    assert set(bulk.lane_of().values()) == {BULK} and len(bulk.out) == 4
    critical = send_announcement(world, critical=True)
    assert set(critical.lane_of().values()) == {PRIORITY} and len(critical.out) == 4
    assert all(n["critical"] for _, n in critical.out.values())
    high = send_announcement(world, priority="high")
    assert set(high.lane_of().values()) == {PRIORITY}


def test_without_a_priority_emitter_everything_goes_to_the_one_given(world):
    out: list[str] = []
    Fanout(world).message(
        MessageCreated(
            message_id="m2",
            server_id="s1",
            channel_id="c1",
            sender_id="sender",
            sender_name="S",
            content="x",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            mentions=["bob"],
        ),
        lambda uid, nid, value: out.append(uid),
        Suppressed(),
    )
    assert sorted(out) == ["ann", "bob", "cyd"]
