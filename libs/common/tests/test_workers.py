"""BackgroundWorkers' shutdown order and bound (no servers needed)."""

from __future__ import annotations

import threading
import time

from notify_common.workers import BackgroundWorkers


class Loop:
    """A worker that loops until told to stop, then takes `finish_s` to hand in its work."""

    def __init__(self, name: str, log: list[str], finish_s: float = 0.05) -> None:
        self.name, self.log, self.finish_s = name, log, finish_s
        self._stop = threading.Event()

    def run(self) -> None:
        self._stop.wait()
        time.sleep(self.finish_s)
        self.log.append(f"{self.name} finished")

    def stop(self) -> None:
        self.log.append(f"{self.name} asked to stop")
        self._stop.set()


def test_the_last_started_stops_and_finishes_before_the_one_it_feeds_is_asked():
    log: list[str] = []
    workers = BackgroundWorkers(drain_timeout_s=5)
    sender, consumer = Loop("sender", log), Loop("consumer", log)
    workers.start("sender", sender.run, stop=sender.stop)  # started first: it is fed
    workers.start("consumer", consumer.run, stop=consumer.stop)  # feeds the sender
    closed: list[str] = []
    workers.on_close(lambda: closed.append(f"closed after {len(log)} steps"))
    workers.drain()
    assert log == [
        "consumer asked to stop",
        "consumer finished",
        "sender asked to stop",
        "sender finished",
    ]
    assert closed == ["closed after 4 steps"]
    assert not any(t.is_alive() for t in workers.threads)


def test_the_drain_timeout_bounds_the_whole_shutdown():
    log: list[str] = []
    workers = BackgroundWorkers(drain_timeout_s=0.5)
    for name in ("a", "b", "c"):
        stuck = Loop(name, log, finish_s=3)
        workers.start(name, stuck.run, stop=stuck.stop)
    started = time.monotonic()
    workers.drain()
    assert time.monotonic() - started < 1.5  # not 0.5 s per worker in turn, nor 3 s each


def test_a_worker_without_stop_ends_on_the_shared_event():
    workers = BackgroundWorkers(drain_timeout_s=5)
    done = threading.Event()

    def relay() -> None:
        workers.stop.wait()
        done.set()

    workers.start("relay", relay)
    workers.drain()
    assert done.is_set()
