"""What an instance remembers of the notifications that went by."""

from __future__ import annotations

from notify_realtime.recent import RecentIndex


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_last_notification_per_user_is_remembered_within_the_window():
    clock = Clock()
    recent = RecentIndex(window_s=60, max_users=10, clock=clock)
    assert recent.saw("u1", "n1")
    assert recent.saw("u1", "n2")
    assert recent.saw("u2", "n3")
    assert recent.last_seen("u1") == "n2"
    assert recent.last_seen("u2") == "n3"
    assert recent.last_seen("u3") is None
    clock.now += 61
    assert recent.last_seen("u1") is None


def test_a_redelivered_notification_is_reported_once():
    recent = RecentIndex(window_s=60, max_users=10)
    assert recent.saw("u1", "n1")
    assert not recent.saw("u1", "n1")


def test_memory_is_bounded_by_users_and_by_age():
    clock = Clock()
    recent = RecentIndex(window_s=60, max_users=3, max_ids=5, clock=clock)
    for i in range(10):
        recent.saw(f"u{i}", f"n{i}")
    assert len(recent) == 3
    assert recent.last_seen("u9") == "n9"
    assert recent.last_seen("u0") is None
    assert len(recent._ids) == 5
    clock.now += 61
    recent.saw("u-new", "n-new")  # expiry happens as records go by
    assert len(recent) == 1
