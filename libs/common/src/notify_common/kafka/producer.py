"""The producer every service uses: idempotent, acks=all, delivery confirmed on request.

`publish` is for asyncio code that must not answer before the broker confirmed the write
(ingest returns 202 only then); `produce`/`flush` are for batch code (relays, consumers)
that confirms a whole batch at once before committing its input.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka.config import producer_config
from notify_common.settings import CommonSettings
from notify_schemas.envelope import Headers

logger = log.get(__name__)

# Errors after which every later write of this producer fails the same way: an idempotent
# producer whose id or epoch the broker no longer accepts. Seen on the embedded broker after
# it was unreachable for a while (PRODUCER_FENCED on every write until the process
# restarted); librdkafka reports some of these as fatal, others only per message.
_RENEW_ON = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._FENCED,
        KafkaError._FATAL,
    }
)


class PublishError(RuntimeError):
    """The broker did not confirm the write (it may or may not have happened)."""


class EventProducer:
    """One librdkafka producer, replaced by a fresh one after a fatal error.

    An idempotent producer that hits a fatal error (seen here: PRODUCER_FENCED after the
    broker was unreachable for a while; on Apache Kafka e.g. an unrecoverable sequence gap)
    fails every later write until it is recreated. The error callback marks it; the next
    call replaces it. Writes queued on the old one fail (their callers see PublishError and
    retry), so nothing is reported as written that was not.
    """

    def __init__(self, settings: CommonSettings, **overrides: Any) -> None:
        self.settings = settings
        self._failed = 0
        self._failures = 0  # every failed delivery since the start (never reset)
        self._last_error = ""
        self._delivered: Counter[str] = Counter()
        # The default delivery report of every produce() without its own callback: counts
        # outcomes cheaply (metrics are updated in bulk on flush).
        self._config = producer_config(
            settings, on_delivery=self._count_delivery, error_cb=self._on_error, **overrides
        )
        self._producer = Producer(self._config)
        self._fatal: KafkaError | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None

    # --- fatal errors -----------------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() in _RENEW_ON:
            self._fatal = err

    def _renew_if_fatal(self) -> None:
        if self._fatal is None:
            return
        with self._lock:
            err = self._fatal
            if err is None:
                return
            old = self._producer
            self._producer = Producer(self._config)
            self._fatal = None
        metrics.PRODUCER_RESETS.inc()
        logger.warning("producer hit a fatal error; replaced it", error=str(err))
        # Fail what the old one still holds (delivery reports with errors), then drop it.
        with contextlib.suppress(KafkaException, RuntimeError):
            old.purge()
            old.flush(0)

    @property
    def renewals_pending(self) -> bool:
        return self._fatal is not None

    # --- background delivery reports (for asyncio callers) ------------------------------
    def start(self) -> None:
        """Serve delivery callbacks from a thread so coroutines can await confirmations."""
        if self._poller is None:
            self._poller = threading.Thread(
                target=self._poll_loop, name="producer-poll", daemon=True
            )
            self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            self._renew_if_fatal()

    async def publish(
        self,
        topic: str,
        *,
        key: str | bytes | None,
        value: bytes | None,
        headers: Headers,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the broker's confirmation
    ) -> None:
        """Write one event and wait until the broker confirmed it (or raise PublishError)."""
        self._renew_if_fatal()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                loop.call_soon_threadsafe(_resolve, fut, None)
            else:
                self._on_error(err)
                loop.call_soon_threadsafe(_resolve, fut, PublishError(str(err)))

        try:
            self._producer.produce(
                topic, key=key, value=value, headers=headers, on_delivery=on_delivery
            )
        except (BufferError, KafkaException) as exc:
            metrics.PUBLISHED.labels(topic=base_topic(topic), result="error").inc()
            raise PublishError(str(exc)) from exc
        try:
            await asyncio.wait_for(fut, timeout)
        except (TimeoutError, PublishError) as exc:
            metrics.PUBLISHED.labels(topic=base_topic(topic), result="error").inc()
            raise PublishError(str(exc) or "broker did not confirm in time") from exc
        metrics.PUBLISHED.labels(topic=base_topic(topic), result="ok").inc()

    # --- batch use ------------------------------------------------------------------------
    def produce(
        self, topic: str, *, key: str | bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Queue one event; call `flush` before treating the batch as written."""
        self._renew_if_fatal()
        while True:
            try:
                self._producer.produce(
                    topic, key=key, value=value, headers=headers, on_delivery=self._count_delivery
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                self._producer.poll(0.1)

    def failure_mark(self) -> int:
        """A mark for `flush(since=…)`: take it before queueing a batch."""
        return self._failures

    def _count_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered[msg.topic() or ""] += 1
        else:
            self._on_error(err)
            self._failed += 1
            self._failures += 1
            self._last_error = str(err)
            metrics.PUBLISHED.labels(topic=base_topic(msg.topic()), result="error").inc()

    def flush(self, timeout: float = 30.0, *, since: int | None = None) -> None:
        """Block until every queued event is confirmed; raise if any failed or timed out.

        Several threads may share the producer (the fanout's agents do): with `since`, the
        call fails if any write failed after that `failure_mark()`, whoever's it was — a
        failure is never consumed by one caller and missed by another."""
        producer = self._producer
        remaining = producer.flush(timeout)
        self._renew_if_fatal()
        failed, self._failed = self._failed, 0
        delivered, self._delivered = self._delivered, Counter()
        for topic, count in delivered.items():
            metrics.PUBLISHED.labels(topic=base_topic(topic), result="ok").inc(count)
        if remaining:
            raise PublishError(f"{remaining} events not confirmed within {timeout}s")
        if since is not None and self._failures != since:
            raise PublishError(f"{self._failures - since} events failed: {self._last_error}")
        if since is None and failed:
            raise PublishError(f"{failed} events failed: {self._last_error}")

    def poll(self, timeout: float = 0) -> int:
        return self._producer.poll(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._closed.set()
        if self._poller is not None:
            self._poller.join(timeout=2)
        self._producer.flush(timeout)

    @property
    def raw(self) -> Producer:
        return self._producer


def _resolve(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


def base_topic(topic: str | None) -> str:
    topic = topic or ""
    # Metric labels use the contract's topic name, not the per-environment prefixed one.
    idx = topic.find("notify.")
    return topic[idx:] if idx > 0 else topic
