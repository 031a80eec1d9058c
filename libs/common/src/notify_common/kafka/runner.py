"""The one consumer runner behind every non-Faust consumer (STYLE.md habit 3).

A handler is a plain callable taking a list of `Received` events; it knows nothing of
Kafka. The runner owns everything else:

* poll a batch, decode the CloudEvents envelope and validate the value against the topic's
  model; a message that fails is dead-lettered at once (invalid input is not transient);
* call the handler with the valid events;
* on an exception listed in `unavailable` (a dependency such as PostgreSQL is down) retry
  the batch with capped exponential backoff and jitter for as long as it takes, reporting
  not-ready meanwhile: nothing is wrong with the messages, so nothing is dead-lettered;
* on any other exception retry the batch `max_attempts` times, then run each event alone
  to isolate the poison one(s) and dead-letter only those, with the error's class, reason
  and attempt count in the DLQ headers;
* commit offsets only after the handler succeeded or the message was dead-lettered, and the
  DLQ write was confirmed;
* on stop (SIGTERM) finish the batch in hand, commit, leave the group and return. A batch
  that is waiting to be retried when the stop comes is left uncommitted instead (it is
  redelivered after the restart): it is neither retried in a hurry nor dead-lettered for
  want of time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from pydantic import BaseModel

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka.codec import InvalidEvent, PermanentError, dead_letter_headers, decode
from notify_common.kafka.config import consumer_config
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.producer import base_topic as _base
from notify_common.settings import CommonSettings
from notify_schemas import envelope
from notify_schemas.topics import DLQ, all_topics

logger = log.get(__name__)


@dataclass(frozen=True)
class Received:
    event: BaseModel | None  # None for a tombstone on a compacted topic
    key: str | None
    headers: dict[str, str]
    topic: str
    partition: int
    offset: int
    message: Message = field(repr=False, compare=False)

    @property
    def event_id(self) -> str:
        return self.headers.get("ce_id", "")

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get(envelope.CORRELATION_HEADER)


Handler = Callable[[list[Received]], None]


class _Stopped(Exception):
    """Stop was asked while a batch waited for its next attempt: leave it uncommitted."""


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * (2**attempt)))  # noqa: S311 - jitter, not crypto


class ConsumerRunner:
    def __init__(
        self,
        *,
        settings: CommonSettings,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        producer: EventProducer | None = None,
        batch_size: int = 500,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        unavailable: tuple[type[BaseException], ...] = (),
        allow_tombstones: bool = False,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.topics = [settings.topic(t) for t in topics]
        self.handler = handler
        self.producer = producer or EventProducer(settings)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.unavailable = unavailable
        self.allow_tombstones = allow_tombstones
        self._consumer = Consumer(consumer_config(settings, group, **(consumer_overrides or {})))
        self._stop = threading.Event()
        self._models = {settings.topic(t.name): t.model for t in all_topics().values()}
        self.assigned: set[tuple[str, int]] = set()
        self.healthy = True  # False while a dependency is unavailable
        self._last_lag_report = 0.0

    # --- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and return (signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        logger.info("consumer started", group=self.group, topics=self.topics)
        try:
            while not self._stop.is_set():
                try:
                    self.poll_once(timeout=0.5)
                except _Stopped:
                    logger.info("stopped before the batch succeeded; it will be redelivered")
                    break
        finally:
            try:
                self._consumer.close()
            finally:
                logger.info("consumer stopped", group=self.group)

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume, handle and commit one batch; return how many messages it held."""
        messages = self._consumer.consume(self.batch_size, timeout)
        real = [m for m in messages if not self._is_error(m)]
        if real:
            self._process(real)
            self._commit(real)
        self._report_lag()
        return len(real)

    def _on_assign(self, _c: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        logger.info("partitions assigned", group=self.group, count=len(partitions))

    def _on_revoke(self, _c: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(p.topic, p.partition) for p in partitions}

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            logger.warning("consumer error", group=self.group, error=str(err))
        return True

    # --- processing -------------------------------------------------------------------------
    def _process(self, messages: list[Message]) -> None:
        for msg in messages:
            metrics.CONSUMED.labels(group=self.group, topic=_base(msg.topic())).inc()
        valid: list[Received] = []
        for msg in messages:
            try:
                valid.append(self.decode(msg))
            except InvalidEvent as exc:
                self._dead_letter(msg, exc, attempts=1)
        if valid:
            self._handle_with_retries(valid)
        self.producer.flush()  # DLQ writes confirmed before the offsets move

    def decode(self, msg: Message) -> Received:
        decoded = decode(
            model=self._models.get(msg.topic() or ""),
            key=msg.key(),
            value=msg.value(),
            headers=msg.headers(),
            allow_tombstones=self.allow_tombstones,
        )
        return Received(
            event=decoded.event,
            key=decoded.key,
            headers=decoded.headers,
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            message=msg,
        )

    def _handle_with_retries(self, batch: list[Received]) -> None:
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                self.handler(batch)
            except self.unavailable as exc:
                # A dependency is down: wait for it; the events are fine.
                self.healthy = False
                metrics.RETRIES.labels(group=self.group).inc()
                delay = self.backoff.delay(min(attempt, 10))
                logger.warning(
                    "dependency unavailable, retrying",
                    group=self.group,
                    error=type(exc).__name__,
                    delay=round(delay, 3),
                )
                if self._stop.wait(delay):
                    raise _Stopped from None  # uncommitted: redelivered after the restart
                attempt = 0
                continue
            except PermanentError:
                # At least one event can never succeed: find it, let the others through.
                self._isolate(batch)
                return
            except Exception as exc:
                if attempt >= self.max_attempts:
                    logger.warning(
                        "batch failed, isolating",
                        group=self.group,
                        error=type(exc).__name__,
                        size=len(batch),
                    )
                    self._isolate(batch)
                    return
                metrics.RETRIES.labels(group=self.group).inc()
                if self._stop.wait(self.backoff.delay(attempt)):
                    raise _Stopped from None
                continue
            finally:
                metrics.HANDLER_DURATION.labels(group=self.group).observe(
                    time.perf_counter() - started
                )
            self.healthy = True
            return

    def _isolate(self, batch: list[Received]) -> None:
        """Run each event alone; dead-letter those that still fail after their retries."""
        for item in batch:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    self.handler([item])
                    break
                except self.unavailable:
                    # Lost the dependency while isolating: go back to waiting for it.
                    self._handle_with_retries([item])
                    break
                except PermanentError as exc:
                    self._dead_letter(item.message, exc, attempts=attempt)
                    break
                except Exception as exc:
                    if attempt == self.max_attempts:
                        self._dead_letter(item.message, exc, attempts=attempt)
                    else:
                        metrics.RETRIES.labels(group=self.group).inc()
                        if self._stop.wait(self.backoff.delay(attempt)):
                            raise _Stopped from None

    def _dead_letter(self, msg: Message, exc: BaseException, *, attempts: int) -> None:
        headers = dead_letter_headers(
            headers=msg.headers(),
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            group=self.settings.group(self.group),
            exc=exc,
            attempts=attempts,
        )
        self.producer.produce(
            self.settings.topic(DLQ), key=msg.key(), value=msg.value(), headers=headers
        )
        metrics.DLQ_WRITES.labels(
            group=self.group, topic=_base(msg.topic()), error_class=type(exc).__name__
        ).inc()
        logger.warning(
            "dead-lettered",
            group=self.group,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error_class=type(exc).__name__,
            reason=str(exc)[:200],
        )

    def _commit(self, messages: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic() or "", m.partition() or 0)
            last[tp] = max(last.get(tp, -1), m.offset() or 0)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        self._consumer.commit(offsets=offsets, asynchronous=False)

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_report < 10:
            return
        self._last_lag_report = now
        try:
            assignment = self._consumer.assignment()
            positions = self._consumer.position(assignment)
            for tp in positions:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=False)
                lag = max(0, high - tp.offset) if tp.offset >= 0 else 0
                metrics.CONSUMER_LAG.labels(
                    group=self.group, topic=_base(tp.topic), partition=str(tp.partition)
                ).set(lag)
        except Exception as exc:  # lag is informative; never let it break consumption
            logger.debug("lag report failed", error=str(exc))
