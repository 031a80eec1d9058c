"""The sending side of the service: one thread with its own event loop, running

* the immediate sender (critical mail, woken by the consumer as soon as it queued some),
* the digest scheduler (every NOTIFY_DIGEST_POLL_INTERVAL_S, when enabled),
* the quota alert sender and the outbox pump (woken by the transactions that need them),
* housekeeping: the quota and backlog gauges, and the retention cleanup.

Each loop survives the failures of its dependencies (logged, retried after a pause) and
reports them through `healthy`, which /readyz shows. `stop` lets the mails in flight
finish, publishes what the outbox holds and returns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from notify_common import logging as log
from notify_common import metrics
from notify_email_digest import store
from notify_email_digest.alerts import AlertSender
from notify_email_digest.context import Context
from notify_email_digest.digest import DigestRun, RunSummary
from notify_email_digest.immediate import ImmediateSender

logger = log.get(__name__)

_HOUSEKEEPING_INTERVAL_S = 15.0
_CLEANUP_INTERVAL_S = 3600.0
_ERROR_PAUSE_S = 2.0
_OUTBOX_INTERVAL_S = 1.0
_STOP_TIMEOUT_S = 30.0


async def run_digest_once(ctx: Context) -> RunSummary:
    """One digest run at the context's clock, then its alerts and outcomes delivered: what
    `notify-email-digest run-digest` does."""
    run = DigestRun(ctx)
    try:
        summary = await run.run(ctx.clock())
    finally:
        await run.close()
    await AlertSender(ctx).send_due()
    await ctx.pump_outbox()
    return summary


class Worker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.on_outbox = self.wake_outbox
        ctx.on_alert = self.wake_alerts
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._immediate = asyncio.Event()
        self._outbox = asyncio.Event()
        self._alerts = asyncio.Event()
        self.problems: dict[str, str] = {}
        self._next_cleanup = 0.0

    # --- lifecycle (any thread) ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="email-sender", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S + 10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """New immediate mail was queued (called from the consumer thread)."""
        self._set(self._immediate)

    def wake_outbox(self) -> None:
        self._set(self._outbox)

    def wake_alerts(self) -> None:
        self._set(self._alerts)

    def _set(self, event: asyncio.Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if threading.current_thread() is self._thread:
                event.set()
            else:
                loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop closed in between: nothing left to wake
            pass

    # --- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Events belong to the loop that waits on them: made afresh inside it.
        self._stop, self._immediate = asyncio.Event(), asyncio.Event()
        self._outbox, self._alerts = asyncio.Event(), asyncio.Event()
        self._ready.set()
        tasks = [
            asyncio.create_task(self._immediate_loop(), name="immediate"),
            asyncio.create_task(
                self._forever("outbox", self._pump, self._outbox, _OUTBOX_INTERVAL_S)
            ),
            asyncio.create_task(
                self._forever("alerts", self._send_alerts, self._alerts, _HOUSEKEEPING_INTERVAL_S)
            ),
            asyncio.create_task(
                self._forever("housekeeping", self._housekeeping, None, _HOUSEKEEPING_INTERVAL_S)
            ),
        ]
        if self.ctx.settings.digest_scheduler_enabled:
            tasks.append(
                asyncio.create_task(
                    self._forever(
                        "digest", self._digest, None, self.ctx.settings.digest_poll_interval_s
                    )
                )
            )
        await self._stop.wait()
        for event in (self._immediate, self._outbox, self._alerts):
            event.set()
        _done, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
        for task in pending:
            task.cancel()
        await self.ctx.pump_outbox()
        logger.info("email sender stopped")

    async def _pause(self, event: asyncio.Event | None, seconds: float) -> None:
        """Wait for `event`, the stop signal or `seconds`, whichever comes first."""
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
        _done, pending = await asyncio.wait(
            waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()
        if event is not None:
            event.clear()

    async def _forever(
        self,
        name: str,
        step: Callable[[], Awaitable[None]],
        event: asyncio.Event | None,
        interval: float,
    ) -> None:
        while not self._stop.is_set():
            try:
                await step()
                self.problems.pop(name, None)
            except Exception as exc:
                self.problems[name] = f"{name}: {type(exc).__name__}"
                logger.warning(f"{name} failed, retrying", error=str(exc)[:300])
                await self._pause(None, _ERROR_PAUSE_S)
            await self._pause(event, interval)

    async def _immediate_loop(self) -> None:
        sender = ImmediateSender(self.ctx)
        try:
            while not self._stop.is_set():
                try:
                    claimed = await sender.send_due()
                    self.problems.pop("immediate", None)
                except Exception as exc:
                    self.problems["immediate"] = f"immediate: {type(exc).__name__}"
                    logger.warning("immediate sender failed, retrying", error=str(exc)[:300])
                    await sender.close()
                    await self._pause(None, _ERROR_PAUSE_S)
                    continue
                if claimed:
                    continue  # more may be due
                # Idle: hang up, then sleep until woken, the next retry is due, or the poll.
                await sender.close()
                timeout = self.ctx.settings.email_poll_interval_s
                try:
                    due = await sender.next_due()
                except Exception:
                    due = None
                if due is not None:
                    timeout = min(timeout, (due - self.ctx.clock()).total_seconds())
                await self._pause(self._immediate, timeout)
        finally:
            await sender.close()

    async def _pump(self) -> None:
        await asyncio.to_thread(self.ctx.pump.drain)

    async def _send_alerts(self) -> None:
        await AlertSender(self.ctx).send_due()

    async def _digest(self) -> None:
        run = DigestRun(self.ctx)
        try:
            await run.run(self.ctx.clock())
        except Exception:
            metrics.EMAIL_DIGEST_RUNS.labels(result="error").inc()
            raise
        finally:
            await run.close()

    async def _housekeeping(self) -> None:
        ctx = self.ctx
        await asyncio.to_thread(ctx.refresh_quota_gauges)
        backlog = await asyncio.to_thread(store.backlog, ctx.engine)
        for state, count in backlog.items():
            metrics.EMAIL_BACKLOG.labels(state=state).set(count)
        if time.monotonic() >= self._next_cleanup:
            self._next_cleanup = time.monotonic() + _CLEANUP_INTERVAL_S
            removed = await asyncio.to_thread(
                store.cleanup,
                ctx.engine,
                now=ctx.clock(),
                retention_days=ctx.settings.email_retention_days,
            )
            if removed:
                logger.info("email records past retention removed", count=removed)
