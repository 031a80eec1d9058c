"""The background threads of a service process (consumers, relays, senders) and the
readiness checks every service with a database shares.

One mechanism for every service: a worker is started guarded (a crash is logged and shows
on /readyz, the process keeps serving), may report a health problem, is told to stop on
shutdown, and is joined within a drain timeout before the process exits.

Shutdown runs in the reverse order of start, one component at a time: what was started last
(typically a consumer that feeds a sender started before it) stops first and has committed
its batch before the component it hands work to is asked to finish its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from notify_common import logging as log
from notify_common.http import ReadinessCheck

logger = log.get(__name__)

Problem = Callable[[], str | None]


class BackgroundWorkers:
    def __init__(self, drain_timeout_s: float = 30.0) -> None:
        self.drain_timeout_s = drain_timeout_s
        # Set on shutdown; workers that loop on an Event can wait on this one.
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        # (stop, thread) per component, in the order they were started or tracked.
        self._stops: list[tuple[Callable[[], None] | None, threading.Thread | None]] = []
        self._problems: list[Problem] = []
        self._closers: list[Callable[[], None]] = []

    def start(
        self,
        name: str,
        target: Callable[[], None],
        *,
        stop: Callable[[], None] | None = None,
        problem: Problem | None = None,
    ) -> None:
        """Run `target` in a daemon thread; `stop` asks it to finish its batch and return,
        `problem` says what is wrong with it while it runs (None when healthy)."""

        def guarded() -> None:
            try:
                target()
            except Exception:
                # Reported by /readyz (the thread is no longer alive) and logged here.
                logger.exception("background worker crashed", worker=name)

        if problem is not None:
            self._problems.append(problem)
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._stops.append((stop, thread))
        thread.start()
        self.threads.append(thread)

    def track(
        self, *, stop: Callable[[], None] | None = None, problem: Problem | None = None
    ) -> None:
        """Include a component that runs its own threads in shutdown and readiness."""
        if stop is not None:
            self._stops.append((stop, None))
        if problem is not None:
            self._problems.append(problem)

    def on_close(self, close: Callable[[], None]) -> None:
        """Run after every worker has stopped (e.g. close a producer)."""
        self._closers.append(close)

    def problems(self) -> list[str]:
        out = [f"{t.name} is not running" for t in self.threads if not t.is_alive()]
        out += [p for p in (check() for check in self._problems) if p]
        return out

    def drain(self) -> None:
        """Stop every component, last started first, each finishing what it holds, within
        `drain_timeout_s` in all (the orchestrator's grace period must exceed it); then run
        the closers. Blocks: call it from a thread, not an event loop."""
        deadline = time.monotonic() + self.drain_timeout_s
        self.stop.set()
        for stop, thread in reversed(self._stops):
            if stop is not None:
                stop()
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        for thread in self.threads:
            # Workers without a stop of their own end on the shared `stop` event.
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("worker did not stop in time", worker=thread.name)
        for close in self._closers:
            close()
        # Drop the references: a Kafka client's librdkafka threads end only with the client.
        self._closers.clear()
        self._stops.clear()
        self._problems.clear()


def database_check(engine: Engine) -> ReadinessCheck:
    """Readiness: the database answers `SELECT 1`."""

    async def database_reachable() -> str | None:
        def probe() -> str | None:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return None
            except Exception as exc:
                return f"database unreachable: {type(exc).__name__}"

        return await asyncio.to_thread(probe)

    return database_reachable


def workers_check(current: Callable[[], BackgroundWorkers | None]) -> ReadinessCheck:
    """Readiness: every background worker is alive and healthy."""

    async def workers_running() -> str | None:
        workers = current()
        return "; ".join(workers.problems() if workers is not None else []) or None

    return workers_running
