"""Stall detection over source partitions, with a controlled clock."""

from __future__ import annotations

from notify_fanout.watchdog import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch_at(offset: int | None = 10) -> tuple[StallWatch, Clock]:
    clock = Clock()
    w = StallWatch(stall_after_s=10, clock=clock)
    w.assigned({("m", 0)}, lambda _t, _p: offset)
    return w, clock


def test_records_waiting_and_none_arriving_is_a_stall_reported_once_per_period():
    w, clock = watch_at(10)
    assert w.stalled({("m", 0): 50}) == []  # just assigned
    clock.now += 9
    assert w.stalled({("m", 0): 50}) == []
    clock.now += 1
    assert w.stalled({("m", 0): 50}) == [("m", 0, 10)]
    clock.now += 1
    assert w.stalled({("m", 0): 50}) == []  # re-sought just now; give it time
    clock.now += 10
    assert w.stalled({("m", 0): 50}) == [("m", 0, 10)]


def test_arriving_records_move_the_position_and_keep_it_alive():
    w, clock = watch_at(10)
    for offset in range(10, 20):
        clock.now += 5
        w.taken("m", 0, offset)
        assert w.stalled({("m", 0): 50}) == []
    clock.now += 10
    assert w.stalled({("m", 0): 50}) == [("m", 0, 20)]


def test_a_caught_up_partition_is_idle_not_stalled():
    w, clock = watch_at(10)
    clock.now += 60
    assert w.stalled({("m", 0): 10}) == []
    # Records then appear: the idle time before does not count against the partition.
    clock.now += 1
    assert w.stalled({("m", 0): 12}) == []
    clock.now += 10
    assert w.stalled({("m", 0): 12}) == [("m", 0, 10)]


def test_time_inside_a_batch_is_not_stall_time():
    w, clock = watch_at(10)
    w.batch_started()
    clock.now += 30  # outputs awaiting confirmation (broker slow)
    assert w.stalled({("m", 0): 50}) == []
    w.batch_finished()
    assert w.stalled({("m", 0): 50}) == []
    clock.now += 10
    assert w.stalled({("m", 0): 50}) == [("m", 0, 10)]


def test_two_agents_busy_at_once_hold_detection_until_both_finish():
    w, clock = watch_at(10)
    w.batch_started()
    w.batch_started()
    clock.now += 20
    w.batch_finished()
    assert w.stalled({("m", 0): 50}) == []
    w.batch_finished()
    clock.now += 10
    assert w.stalled({("m", 0): 50}) == [("m", 0, 10)]


def test_unknown_position_or_end_is_never_a_stall():
    w, clock = watch_at(None)
    clock.now += 60
    assert w.stalled({("m", 0): 50}) == []
    assert w.stalled({}) == []


def test_assignment_changes_drop_and_add_partitions():
    w, clock = watch_at(10)
    w.assigned({("m", 1)}, lambda _t, _p: 3)
    clock.now += 10
    assert w.stalled({("m", 0): 50, ("m", 1): 9}) == [("m", 1, 3)]
    w.reset()
    clock.now += 10
    assert w.stalled({("m", 1): 9}) == []
