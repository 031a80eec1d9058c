"""The shared consumer runner against a real broker: what handlers see, what is committed, and
what ends up in the DLQ with which metadata."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from notify_common.kafka.runner import Backoff, ConsumerRunner, Received
from notify_schemas import envelope, topics
from notify_schemas.models import NotificationCreated

pytestmark = pytest.mark.integration

GROUP = "test-consumer"
FAST = Backoff(base=0.01, cap=0.05)


class Recorder:
    """A handler that records every batch it completed; `fail` may raise for a batch."""

    def __init__(self, fail: Callable[[list[Received]], None] | None = None) -> None:
        self.fail = fail
        self.calls = 0
        self.batches: list[list[Received]] = []
        self._lock = threading.Lock()

    def __call__(self, batch: list[Received]) -> None:
        with self._lock:
            self.calls += 1
        if self.fail is not None:
            self.fail(batch)
        with self._lock:
            self.batches.append(list(batch))

    @property
    def handled(self) -> list[str]:
        with self._lock:
            return [str(r.event.notification_id) for b in self.batches for r in b]  # type: ignore[union-attr]


def make_runner(kit: Any, handler: Callable[[list[Received]], None], **kw: Any) -> ConsumerRunner:
    kw.setdefault("backoff", FAST)
    return ConsumerRunner(
        settings=kit.settings, group=GROUP, topics=[topics.NOTIFICATIONS], handler=handler, **kw
    )


@contextmanager
def running(runner: ConsumerRunner) -> Iterator[threading.Thread]:
    """run() in a thread; stopped (and required to return) when the block ends."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:  # reported in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="runner", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        runner.stop()
        thread.join(15)
    assert not thread.is_alive(), "run() did not return after stop()"
    if errors:
        raise errors[0]


def dlq_headers(msg: Any) -> dict[str, str]:
    return envelope.decode_headers(msg.headers())


def source_records(kit: Any, count: int) -> dict[tuple[int, int], bytes | None]:
    """The notifications topic as stored: (partition, offset) -> value."""
    return {
        (m.partition(), m.offset()): m.value() for m in kit.read(kit.notifications, expect=count)
    }


def points_at(headers: dict[str, str]) -> tuple[int, int]:
    return int(headers["dlq_original_partition"]), int(headers["dlq_original_offset"])


def test_valid_events_reach_the_handler_and_commits_survive_a_restart(kit: Any) -> None:
    first = [kit.build(user_id=f"u-{i}") for i in range(10)]
    kit.produce_events(first)

    recorder = Recorder()
    with running(make_runner(kit, recorder)):
        kit.wait_until(lambda: len(recorder.handled) >= 10, timeout=30, what="first events")

    assert sorted(recorder.handled) == sorted(e.notification_id for e in first)
    by_id = {str(r.event.notification_id): r for b in recorder.batches for r in b}  # type: ignore[union-attr]
    for built in first:
        received = by_id[built.notification_id]
        assert isinstance(received.event, NotificationCreated)
        assert received.key == built.user_id
        assert received.event.user_id == built.user_id
        assert received.topic == kit.notifications
        assert received.event_id == dict(built.headers)["ce_id"].decode()

    # A replacement worker in the same group resumes after what was handled. The new events
    # use the same keys, so they land behind the old ones in every partition: had the old
    # offsets not been committed, the old events would be redelivered before these arrive.
    second = [kit.build(user_id=f"u-{i}") for i in range(10)]
    kit.produce_events(second)
    again = Recorder()
    with running(make_runner(kit, again)):
        kit.wait_until(lambda: len(again.handled) >= 10, timeout=30, what="second events")

    assert sorted(again.handled) == sorted(e.notification_id for e in second)


def test_exhausted_handler_dead_letters_and_commits(kit: Any) -> None:
    events = [kit.build(user_id=f"u-{i}") for i in range(3)]
    kit.produce_events(events)

    def always_fail(_batch: list[Received]) -> None:
        raise ValueError("template render failed: boom")

    recorder = Recorder(fail=always_fail)
    with running(make_runner(kit, recorder, max_attempts=2)):
        dead = kit.read(kit.dlq, expect=3, timeout=30)
        assert len(dead) == 3
        stored = source_records(kit, 3)

        def all_committed() -> bool:
            done = kit.committed(GROUP)
            return all(done.get(p, -1) > o for p, o in stored)

        kit.wait_until(all_committed, timeout=15, what="offsets committed after dead-lettering")

    assert recorder.handled == []
    values = {e.value for e in events}
    for msg in dead:
        h = dlq_headers(msg)
        assert msg.value() in values
        assert h["dlq_attempts"] == "2"
        assert h["dlq_error_class"] == "ValueError"
        assert "boom" in h["dlq_reason"]
        assert h["dlq_consumer_group"] == kit.settings.group(GROUP)
        assert stored[points_at(h)] == msg.value()


def test_poison_messages_go_to_the_dlq_at_once_and_the_rest_is_handled(kit: Any) -> None:
    valid = [kit.build(user_id=f"u-{i}") for i in range(4)]
    bad_schema = kit.build(user_id="u-bad")
    schema_value = bad_schema.value.replace(b'"priority":"normal"', b'"priority":"urgent"')
    assert schema_value != bad_schema.value
    not_json = b"\x00\x01this is not json{"
    no_headers = kit.build(user_id="u-nohdr")
    records: list[tuple[str | None, bytes | None, envelope.Headers]] = [
        (valid[0].user_id, valid[0].value, valid[0].headers),
        ("k-notjson", not_json, valid[0].headers[:1] + kit.build().headers[1:]),
        (valid[1].user_id, valid[1].value, valid[1].headers),
        ("k-schema", schema_value, bad_schema.headers),
        (valid[2].user_id, valid[2].value, valid[2].headers),
        ("k-noheaders", no_headers.value, []),
        (valid[3].user_id, valid[3].value, valid[3].headers),
    ]
    kit.produce(records)

    recorder = Recorder()
    with running(make_runner(kit, recorder, max_attempts=5)):
        kit.wait_until(lambda: len(recorder.handled) >= 4, timeout=30, what="valid events")
        dead = kit.read(kit.dlq, expect=3, timeout=15, settle=0.5)

    assert sorted(recorder.handled) == sorted(e.notification_id for e in valid)
    stored = source_records(kit, len(records))
    by_key = {m.key(): m for m in dead}
    assert set(by_key) == {b"k-notjson", b"k-schema", b"k-noheaders"}
    for key, value in [
        (b"k-notjson", not_json),
        (b"k-schema", schema_value),
        (b"k-noheaders", no_headers.value),
    ]:
        msg = by_key[key]
        h = dlq_headers(msg)
        assert msg.value() == value  # byte for byte, so it can be inspected and requeued
        assert h["dlq_original_topic"] == kit.notifications
        assert h["dlq_attempts"] == "1"
        assert h["dlq_error_class"] == "InvalidEvent"
        assert stored[points_at(h)] == value
    assert "JSON" in dlq_headers(by_key[b"k-notjson"])["dlq_reason"]
    assert "priority" in dlq_headers(by_key[b"k-schema"])["dlq_reason"]
    assert "ce_id" in dlq_headers(by_key[b"k-noheaders"])["dlq_reason"]
    # The original envelope travels with it (the admin API requeues with these headers).
    assert dlq_headers(by_key[b"k-schema"])["ce_id"] == dict(bad_schema.headers)["ce_id"].decode()


def test_one_failing_event_is_isolated_and_only_it_dead_lettered(kit: Any) -> None:
    events = [kit.build(user_id=f"u-{i}") for i in range(6)]
    bad = events[3]
    kit.produce_events(events)

    def fail_on_bad(batch: list[Received]) -> None:
        if any(str(r.event.notification_id) == bad.notification_id for r in batch):  # type: ignore[union-attr]
            raise RuntimeError(f"cannot render {bad.notification_id}")

    recorder = Recorder(fail=fail_on_bad)
    with running(make_runner(kit, recorder, max_attempts=3)):
        kit.wait_until(lambda: len(recorder.handled) >= 5, timeout=30, what="good events")
        dead = kit.read(kit.dlq, expect=1, timeout=15, settle=0.5)

    handled = recorder.handled
    assert sorted(handled) == sorted(e.notification_id for e in events if e is not bad)
    assert len(handled) == len(set(handled))  # nobody is notified twice
    assert len(dead) == 1
    h = dlq_headers(dead[0])
    assert dead[0].value() == bad.value
    assert h["dlq_attempts"] == "3"
    assert h["dlq_error_class"] == "RuntimeError"
    assert bad.notification_id in h["dlq_reason"]


def test_unavailable_dependency_is_retried_not_dead_lettered(kit: Any) -> None:
    class DatabaseDown(Exception):
        pass

    events = [kit.build(user_id=f"u-{i}") for i in range(3)]
    kit.produce_events(events)
    health_while_failing: list[bool] = []
    runner_box: list[ConsumerRunner] = []

    def down_three_times(_batch: list[Received]) -> None:
        if recorder.calls > 1:
            health_while_failing.append(runner_box[0].healthy)
        if recorder.calls <= 3:
            raise DatabaseDown("connection refused")
        health_while_failing.pop()  # the successful call is not "while failing"

    recorder = Recorder(fail=down_three_times)
    # max_attempts below the number of failures: an outage must not count towards exhaustion.
    runner = make_runner(kit, recorder, max_attempts=2, unavailable=(DatabaseDown,))
    runner_box.append(runner)
    with running(runner):
        kit.wait_until(lambda: len(recorder.handled) >= 3, timeout=30, what="events after outage")
        assert runner.healthy
        dead = kit.read(kit.dlq, expect=1, timeout=1.5)

    assert recorder.calls >= 4
    assert health_while_failing == [False, False]
    assert sorted(recorder.handled) == sorted(e.notification_id for e in events)
    assert dead == []


def test_stop_from_another_thread_commits_the_batch_in_hand(kit: Any) -> None:
    events = [kit.build(user_id=f"u-{i}") for i in range(5)]
    kit.produce_events(events)
    entered = threading.Event()
    release = threading.Event()

    def block_first_batch(_batch: list[Received]) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(20)

    recorder = Recorder(fail=block_first_batch)
    runner = make_runner(kit, recorder)
    with running(runner) as thread:
        kit.wait_until(entered.is_set, timeout=30, what="the first batch")
        runner.stop()
        release.set()
        thread.join(10)
        assert not thread.is_alive(), "run() did not return after stop()"

    [batch] = recorder.batches  # nothing after the batch in hand
    done = kit.committed(GROUP)
    for received in batch:
        assert done.get(received.partition, -1) > received.offset, (
            f"offset {received.offset} of partition {received.partition} not committed: {done}"
        )


def test_stop_while_a_batch_waits_for_a_retry_leaves_it_for_redelivery(kit: Any) -> None:
    events = [kit.build(user_id=f"u-{i}") for i in range(3)]
    kit.produce_events(events)

    def failing(_batch: list[Received]) -> None:
        raise ValueError("a transient failure")

    recorder = Recorder(fail=failing)
    # A long backoff: the stop comes while the batch waits for its second attempt.
    runner = make_runner(kit, recorder, max_attempts=3, backoff=Backoff(base=30, cap=30))
    with running(runner) as thread:
        kit.wait_until(lambda: recorder.calls >= 1, timeout=30, what="the first attempt")
        runner.stop()
        thread.join(10)
        assert not thread.is_alive(), "a stop during a retry's backoff was not prompt"
    # Neither hurried through its attempts into the DLQ nor committed ...
    assert recorder.calls == 1
    assert kit.read(kit.dlq, expect=1, timeout=1.5) == []
    # ... so the next worker of the group gets the whole batch again.
    again = Recorder()
    with running(make_runner(kit, again)):
        kit.wait_until(lambda: len(again.handled) >= 3, timeout=30, what="the redelivery")
    assert sorted(again.handled) == sorted(e.notification_id for e in events)
