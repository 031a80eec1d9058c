"""The sending side: claims due pushes from push_deliveries, sends them concurrently, and
records each attempt's outcome (database, then notify.deliveries.v1).

One asyncio loop in its own thread. Database work runs in worker threads so the loop keeps
sending meanwhile. Concurrency is bounded twice: `push_max_in_flight` pushes in all and
`push_per_origin` connections per push service origin. An origin with twice that many
pushes waiting is left out of the next claims, so a slow push service holds only its own
share of the slots and the others keep flowing.

RFC 8030 responses (section 5 and 8030 bis practice):
* 2xx: sent; the subscription's last_active is stamped and its failure count cleared;
* 404, 410: the subscription expired or was revoked: deactivated, never retried;
* 413: permanent (logged and counted; the message is trimmed so this means a bug);
* 429: retried no earlier than Retry-After (seconds or HTTP date) and the backoff;
* 5xx, timeouts, connection errors: retried with capped exponential backoff and jitter,
  then dead-lettered after `push_max_attempts`;
* 401, 403: the VAPID key or subject was refused: counted (alert on it), the subscription
  is left alone (the fault is ours);
* other 4xx, and 3xx (redirects are never followed): the subscription's failure count
  grows; at 5 it is no longer used;
* an endpoint the policy refuses at connect time (its name now resolves to a private
  address): not sent, counted against the subscription like other 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from sqlalchemy import Engine

from notify_common import logging as log
from notify_common import metrics
from notify_common.webpush import EndpointPolicy, EndpointRejected
from notify_push_sender import crypto, store
from notify_push_sender.events import Publisher, delivery
from notify_push_sender.pushhttp import BlockedAddress, PushClient
from notify_push_sender.settings import PushSenderSettings
from notify_push_sender.vapid import VapidKeys, VapidSigner

logger = log.get(__name__)


@functools.lru_cache(maxsize=65_536)
def _checked_url(policy: EndpointPolicy, url: str) -> str:
    """The endpoint's origin (the VAPID audience) after the policy's static checks; cached,
    since a subscription's endpoint is pushed to again and again."""
    return policy.check_url(url)[0]


@dataclass(frozen=True)
class Response:
    status: int | None  # None: no HTTP answer (see error)
    error: str | None = None  # timeout | connection | blocked | invalid
    retry_after: str | None = None
    detail: str = ""


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Capped exponential backoff with jitter: half the step fixed, half random, so the
    delay still grows with each attempt while retries of many pushes spread out."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not crypto


def retry_after_s(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def status_class(response: Response) -> str:
    if response.status is None:
        return response.error or "connection"
    return f"{response.status // 100}xx"


def classify(
    job: store.Job, response: Response, settings: PushSenderSettings, now: datetime
) -> store.Outcome:
    """The outcome of one attempt (the table in the module docstring)."""
    outcome = _classify(job, response, settings, now)
    outcome.status_class = status_class(response)
    return outcome


def _classify(
    job: store.Job, response: Response, settings: PushSenderSettings, now: datetime
) -> store.Outcome:
    status = response.status

    def retry(reason: str, *, at_least: float = 0.0) -> store.Outcome:
        if job.attempt >= settings.push_max_attempts:
            return store.Outcome(
                job,
                store.DEAD,
                "failed",
                f"{reason}; gave up after {job.attempt} attempts (dead-lettered)",
                status=status,
            )
        delay = max(
            at_least,
            backoff(job.attempt, base=settings.push_retry_base_s, cap=settings.push_retry_cap_s),
        )
        return store.Outcome(
            job,
            store.QUEUED,
            "deferred",
            f"{reason}; retry {job.attempt + 1} in {delay:.1f} s",
            status=status,
            not_before=now + timedelta(seconds=delay),
        )

    if status is None:
        if response.error == "blocked":
            return store.Outcome(
                job,
                store.FAILED,
                "failed",
                f"endpoint refused at connect time: {response.detail}",
                subscription="failed",
            )
        return retry(f"{response.error}: {response.detail}"[:200])
    if 200 <= status < 300:
        return store.Outcome(job, store.SENT, "sent", f"{status}", status=status, subscription="ok")
    if status in (404, 410):
        return store.Outcome(
            job,
            store.GONE,
            "deactivated",
            f"{status} from the push service: the subscription expired or was revoked",
            status=status,
            subscription="gone",
        )
    if status == 413:
        return store.Outcome(
            job,
            store.FAILED,
            "failed",
            "413: payload too large for the push service",
            status=status,
        )
    if status == 429:
        wait = retry_after_s(response.retry_after, now)
        wait = min(wait, settings.push_retry_after_cap_s) if wait is not None else 0.0
        return retry(f"429 rate limited (Retry-After {response.retry_after})", at_least=wait)
    if status in (401, 403):
        return store.Outcome(
            job,
            store.FAILED,
            "failed",
            f"{status}: the push service refused our VAPID authorization",
            status=status,
        )
    if status >= 500:
        return retry(f"{status} from the push service")
    return store.Outcome(
        job,
        store.FAILED,
        "failed",
        f"{status} from the push service",
        status=status,
        subscription="failed",
    )


def _metric_outcome(outcome: store.Outcome) -> str:
    if outcome.state == store.QUEUED:
        return "retry"
    if outcome.status in (401, 403):
        return "auth"
    if outcome.status_class == "blocked":
        return "blocked"
    return outcome.state


class Dispatcher:
    """Owns the HTTP client, the VAPID signer and the claim/send/record loop."""

    def __init__(
        self,
        *,
        settings: PushSenderSettings,
        engine: Engine,
        publisher: Publisher,
        keys: VapidKeys,
        policy: EndpointPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.engine = engine
        self.publisher = publisher
        self.keys = keys
        self.policy = policy
        self.signer = VapidSigner(settings.vapid_subject, ttl_s=settings.vapid_jwt_ttl_s)
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop = threading.Event()
        # Pushes started or waiting to start, per origin (read by the consumer thread too:
        # a slightly stale count only shifts a push between hand-off and claim).
        self._in_flight: dict[str, int] = defaultdict(int)
        self._ready: deque[store.Job] = deque()
        self._outcomes: list[store.Outcome] = []
        self._published: list[int] = []
        self.healthy = True
        self.sent = 0

    # --- thread-safe controls -------------------------------------------------------
    def wake(self) -> None:
        """New pushes were queued (called from the consumer thread)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def stop(self) -> None:
        self._stop.set()
        self.wake()

    def room(self, origin: str) -> int:
        """How many fresh pushes to this origin may be handed over now (see `submit`).

        Bounded so that a handed-over push starts well within its lease: at most twice the
        concurrency waits, in all and per origin; the rest is claimed from the table later.
        Called from the consumer thread: the counts may be a moment old, which only moves a
        push between hand-off and claim."""
        if self._stop.is_set() or self._loop is None:
            return 0
        s = self.settings
        return max(
            0,
            min(
                2 * s.push_max_in_flight - len(self._ready),
                2 * s.push_per_origin - self._in_flight.get(origin, 0),
            ),
        )

    def submit(self, jobs: list[store.Job]) -> None:
        """Send these pushes, already claimed by this process (inserted inflight by the
        consumer): the hand-off saves a claim round trip per batch. Thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running: the leases expire and a claim takes them over
        loop.call_soon_threadsafe(self._accept, jobs)

    def _accept(self, jobs: list[store.Job]) -> None:
        # Counted here, in the loop's thread, like every other change of the counts.
        for job in jobs:
            self._in_flight[job.origin] += 1
        # The priority lane's pushes (urgency high) start before any bulk ones waiting here
        # (docs/decisions/0010-priority-lanes.md); each lane keeps its own order.
        urgent = [job for job in jobs if job.urgency == "high"]
        self._ready.extend(job for job in jobs if job.urgency != "high")
        self._ready.extendleft(reversed(urgent))
        if self._wake is not None:
            self._wake.set()

    def _busy(self, origin: str) -> bool:
        # Twice the connections: the pushes beyond them wait for a connection, so the
        # origin's connections stay busy, while its share of the slots stays bounded.
        return self._in_flight.get(origin, 0) >= 2 * self.settings.push_per_origin

    def run(self) -> None:
        """Run until `stop()`: pushes in flight finish and their outcomes are recorded."""
        asyncio.run(self._main())

    # --- the loop -------------------------------------------------------------------------
    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        s = self.settings
        session = PushClient(
            policy=self.policy,
            per_origin=s.push_per_origin,
            timeout_s=s.push_request_timeout_s,
            ssl_context=self.ssl_context,
        )
        writer = asyncio.create_task(self._writer(), name="outcome-writer")
        housekeeping = asyncio.create_task(self._housekeeping(), name="housekeeping")
        tasks: set[asyncio.Task[None]] = set()
        capacity = asyncio.Event()
        try:
            await self._claim_loop(session, tasks, capacity)
        finally:
            if tasks:
                await asyncio.wait(tasks, timeout=s.push_request_timeout_s + 5)
            housekeeping.cancel()
            self._stop.set()
            await writer
            session.close()
            if self._ready:
                unstarted = [job.id for job in self._ready]
                self._ready.clear()
                with contextlib.suppress(Exception):  # else their leases run out
                    await asyncio.to_thread(store.release, self.engine, unstarted)

    async def _claim_loop(
        self,
        session: PushClient,
        tasks: set[asyncio.Task[None]],
        capacity: asyncio.Event,
    ) -> None:
        s = self.settings
        assert self._wake is not None
        # Claim in batches: a claim is a database round trip, so wait for a quarter of the
        # slots to free up rather than claiming one push at a time.
        batch = max(1, s.push_max_in_flight // 4)

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            capacity.set()

        def start(job: store.Job) -> None:
            task = asyncio.create_task(self._attempt(session, job))
            tasks.add(task)
            task.add_done_callback(finished)

        while not self._stop.is_set():
            free = s.push_max_in_flight - len(tasks)
            while self._ready and free > 0:  # handed over by the consumer: already claimed
                start(self._ready.popleft())
                free -= 1
            metrics.PUSH_IN_FLIGHT.set(len(tasks))
            if self._ready or (free < batch and tasks):
                capacity.clear()
                await capacity.wait()
                continue
            busy = [o for o in self._in_flight if self._busy(o)]
            self._wake.clear()
            try:
                jobs = await asyncio.to_thread(
                    store.claim, self.engine, limit=free, busy=busy, lease_s=s.push_lease_s
                )
                self.healthy = True
            except Exception as exc:
                self.healthy = False
                logger.warning("claiming pushes failed", error=type(exc).__name__)
                await self._sleep(min(5.0, s.push_poll_interval_s * 5))
                continue
            for job in jobs:
                self._in_flight[job.origin] += 1
                start(job)
            if len(jobs) < free:
                # Drained for now: sleep until the consumer hands over or queues more, a busy
                # origin has room again, or a held or retried push may be due.
                await self._sleep(s.push_poll_interval_s, wake=True)

    async def _sleep(self, seconds: float, *, wake: bool = False) -> None:
        assert self._wake is not None
        if wake:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        else:
            await asyncio.sleep(seconds)

    async def _attempt(self, session: PushClient, job: store.Job) -> None:
        try:
            outcome = await self._send(session, job)
        except Exception as exc:  # a bug must not lose the push: retry it later
            logger.exception("push attempt crashed", job=job.id)
            outcome = classify(
                job,
                Response(None, "connection", detail=type(exc).__name__),
                self.settings,
                self.clock(),
            )
        finally:
            self._in_flight[job.origin] -= 1
            if self._in_flight[job.origin] == 2 * self.settings.push_per_origin - 1:
                assert self._wake is not None
                self._wake.set()  # the origin just left the busy list: claim for it again
        self._outcomes.append(outcome)
        metrics.PUSH_ATTEMPTS.labels(
            outcome=_metric_outcome(outcome), status_class=outcome.status_class
        ).inc()

    async def _send(self, session: PushClient, job: store.Job) -> store.Outcome:
        now = self.clock()
        if not job.usable:
            return store.Outcome(job, store.DROPPED, "suppressed", "subscription inactive")
        remaining = int((job.expires_at - now).total_seconds())
        if remaining <= 0:
            return store.Outcome(
                job, store.DROPPED, "suppressed", "TTL expired before the push could be sent"
            )
        key = self.keys.for_subscription(job.application_server_key)
        if key is None:
            return store.Outcome(
                job,
                store.FAILED,
                "deactivated",
                "subscribed with a retired VAPID key; the browser must subscribe again",
                subscription="retired",
            )
        try:
            origin = _checked_url(self.policy, job.endpoint)
        except EndpointRejected as exc:
            metrics.PUSH_ENDPOINT_REFUSED.labels(at="connect").inc()
            return classify(job, Response(None, "blocked", detail=str(exc)), self.settings, now)
        body = crypto.encrypt(job.payload, p256dh=job.p256dh, auth=job.auth)
        headers = {
            "TTL": str(remaining),
            "Urgency": job.urgency,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.signer.authorization(origin, key),
        }
        if job.topic:
            headers["Topic"] = job.topic
        response = await self._post(session, job.endpoint, body, headers)
        return classify(job, response, self.settings, self.clock())

    async def _post(
        self, session: PushClient, url: str, body: bytes, headers: dict[str, str]
    ) -> Response:
        started = time.perf_counter()
        try:
            answer = await session.post(url, body, headers)
            return Response(answer.status, retry_after=answer.retry_after)
        except TimeoutError:
            return Response(None, "timeout", detail="no answer in time")
        except BlockedAddress:
            metrics.PUSH_ENDPOINT_REFUSED.labels(at="connect").inc()
            return Response(None, "blocked", detail="the host resolves to a non-public address")
        except OSError as exc:
            return Response(None, "connection", detail=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            metrics.PUSH_REQUEST_DURATION.observe(time.perf_counter() - started)

    # --- recording ----------------------------------------------------------------------
    async def _writer(self) -> None:
        """Record outcomes in batches until stopped and nothing is left to record."""
        s = self.settings
        idle = 0.0
        while True:
            if not self._outcomes:
                if self._published and (idle >= 0.2 or self._stop.is_set()):
                    # Quiet for a moment: clear the last batch's pending flags on their own.
                    published, self._published = self._published, []
                    await self._retrying(
                        functools.partial(store.events_published, self.engine, published)
                    )
                if self._stop.is_set():
                    return
                await asyncio.sleep(s.push_flush_interval_s)
                idle += s.push_flush_interval_s
                continue
            idle = 0.0
            batch, self._outcomes = self._outcomes, []
            await self._retrying(functools.partial(self._record, batch))
            if len(batch) < 50:
                await asyncio.sleep(s.push_flush_interval_s)

    async def _retrying(self, work: Callable[[], None]) -> None:
        while True:
            try:
                await asyncio.to_thread(work)
                self.healthy = True
                return
            except Exception as exc:
                # The outcomes stay in memory and are retried; if the process dies now,
                # the leases expire and the pushes are sent again.
                self.healthy = False
                logger.warning("recording outcomes failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    def _record(self, outcomes: list[store.Outcome]) -> None:
        # The previous batch's events are confirmed: their pending flags are cleared in this
        # batch's transaction rather than in one of their own.
        recorded = store.record(self.engine, outcomes, published=self._published)
        self._published = []
        published = []
        for o in outcomes:
            at = recorded.at.get(o.job.id)
            if at is None:
                continue  # the lease was lost to another claim: that one reports
            job = o.job
            self.publisher.delivery(
                user_id=job.user_id,
                value=delivery(
                    notification_id=job.notification_id,
                    user_id=job.user_id,
                    subscription_id=job.subscription_id,
                    outcome=o.outcome,
                    reason=o.reason,
                    attempt=job.attempt,
                    at=at,
                ),
            )
            dead = recorded.dead.get(job.id)
            if dead is not None:
                self.publisher.dead_letter(
                    user_id=job.user_id,
                    event=dead[0],
                    event_headers=dead[1],
                    subscription_id=job.subscription_id,
                    reason=o.reason,
                    attempts=job.attempt,
                )
            if o.subscription in ("gone", "retired"):
                metrics.PUSH_DEACTIVATED.labels(reason=o.subscription).inc()
            if o.status in (401, 403):
                metrics.PUSH_AUTH_REJECTED.inc()
                logger.warning(
                    "push service refused the VAPID authorization",
                    origin=job.origin,
                    status=o.status,
                )
            elif o.status == 413:
                logger.warning("push service refused the payload size", origin=job.origin)
            if o.outcome == "sent":
                self.sent += 1
            logger.info(
                "push attempt recorded",
                notification_id=str(job.notification_id),
                subscription_id=str(job.subscription_id),
                outcome=o.outcome,
                attempt=job.attempt,
            )
            published.append(job.id)
        self.publisher.flush()
        self._published = published

    async def _housekeeping(self) -> None:
        """Republish events lost to a crash, report the backlog, prune old records."""
        last_prune = 0.0
        while True:
            try:
                await asyncio.to_thread(self._republish)
                due, later = await asyncio.to_thread(store.backlog, self.engine)
                metrics.PUSH_BACKLOG.labels(state="due").set(due)
                metrics.PUSH_BACKLOG.labels(state="scheduled").set(later)
                if time.monotonic() - last_prune > 600:
                    last_prune = time.monotonic()
                    await asyncio.to_thread(
                        store.prune, self.engine, retention_days=self.settings.push_retention_days
                    )
            except Exception as exc:
                logger.warning("push housekeeping failed", error=type(exc).__name__)
            await asyncio.sleep(10)

    def _republish(self) -> None:
        pending = store.pending_events(self.engine, older_than_s=30)
        if not pending:
            return
        for p in pending:
            self.publisher.delivery(
                user_id=p.user_id,
                value=delivery(
                    notification_id=p.notification_id,
                    user_id=p.user_id,
                    subscription_id=p.subscription_id,
                    outcome=p.outcome,
                    reason=p.reason,
                    attempt=p.attempt,
                    at=p.at,
                ),
            )
        self.publisher.flush()
        store.events_published(self.engine, [p.id for p in pending])
        logger.info("republished delivery events", count=len(pending))
