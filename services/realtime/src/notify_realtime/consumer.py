"""Reading notify.notifications.v1, notify.notifications-priority.v1 (the priority lane,
docs/decisions/0010-priority-lanes.md) and notify.read-state.v1 for the streams of this
instance.

Every instance must see the events of every user connected to it, and users connect to any
instance, so each instance reads *every* partition of both topics. It does so by assignment,
not in a consumer group: no group join to wait for at start, no rebalance when instances
come and go, and no commits, because a restarted instance has no streams to resume itself —
clients resume from the persisted feed (Last-Event-ID). Reading starts at the end of each
partition.

Records of users with no stream here are skipped on the key alone (no JSON parsing); the
rest are handed to the event loop in one batch per pass.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka.config import client_config
from notify_common.kafka.producer import base_topic
from notify_realtime import sse
from notify_realtime.hub import Record
from notify_realtime.recent import RecentIndex
from notify_realtime.settings import RealtimeSettings
from notify_schemas import envelope, topics

logger = log.get(__name__)

GROUP = "notify-realtime"
# How often new partitions (a topic was grown) are looked for.
_METADATA_REFRESH_S = 30.0


class StreamConsumer:
    def __init__(
        self,
        *,
        settings: RealtimeSettings,
        recent: RecentIndex,
        wants: Callable[[str], bool],
        submit: Callable[[list[Record]], None],
    ) -> None:
        self.settings = settings
        self.recent = recent
        self.wants = wants
        self.submit = submit
        self.notifications = settings.topic(topics.NOTIFICATIONS)
        self.priority = settings.topic(topics.NOTIFICATIONS_PRIORITY)
        self.read_state = settings.topic(topics.READ_STATE)
        # A group id is required by the client, though this consumer never joins a group
        # nor commits; unique per instance so that none would ever be shared.
        instance = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": settings.group(f"{GROUP}.{instance}"),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "latest",
                    # The broker answers a fetch when data arrives or after this wait, and
                    # some brokers (the embedded one) always wait it out: it bounds this
                    # hop's latency, and its inverse is the idle fetch rate (CPU).
                    "fetch.wait.max.ms": settings.kafka_fetch_wait_ms,
                },
            )
        )
        self._assigned: set[tuple[str, int]] = set()
        self.ready = threading.Event()

    def _assign_new_partitions(self, *, at_end: bool) -> None:
        """Assign the partitions not assigned yet: at their end on start, from their
        beginning when a topic grew (all of a new partition is new)."""
        new: list[TopicPartition] = []
        for topic in (self.priority, self.notifications, self.read_state):
            metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"topic {topic} unavailable: {metadata.error}")
            for partition in metadata.partitions:
                if (topic, partition) in self._assigned:
                    continue
                if at_end:
                    # An explicit offset instead of OFFSET_END: the position is fixed now,
                    # before the instance reports ready, not at the first fetch.
                    _low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=10
                    )
                    new.append(TopicPartition(topic, partition, high))
                else:
                    new.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        if new:
            self._consumer.incremental_assign(new)
            self._assigned |= {(tp.topic, tp.partition) for tp in new}
            logger.info("partitions assigned", count=len(new))

    def run(self, stop: threading.Event) -> None:
        """Read until `stop` is set. Blocks; run it in a thread."""
        try:
            self._assign_new_partitions(at_end=True)
            self.ready.set()
            next_refresh = time.monotonic() + _METADATA_REFRESH_S
            while not stop.is_set():
                self.poll_once(timeout=0.2)
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + _METADATA_REFRESH_S
                    try:
                        self._assign_new_partitions(at_end=False)
                    except Exception as exc:  # metadata is refreshed again next time
                        logger.warning("partition refresh failed", error=str(exc)[:200])
        finally:
            self.ready.clear()
            self._consumer.close()

    def poll_once(self, timeout: float) -> int:
        """Wait up to `timeout` for records, take whatever else is already fetched, hand the
        wanted ones to the loop; return how many records were read."""
        first = self._consumer.poll(timeout)
        if first is None:
            return 0
        # consume(n, 0) returns what is already fetched without waiting; consume(n, t)
        # would wait the full t for n records to accumulate, adding latency when idle.
        messages = [first, *self._consumer.consume(self.settings.realtime_consume_batch - 1, 0)]
        wanted: list[Record] = []
        counts: Counter[str] = Counter()
        for msg in messages:
            if self._is_error(msg):
                continue
            topic = msg.topic() or ""
            counts[topic] += 1
            record = self._record(msg, topic)
            if record is not None:
                wanted.append(record)
        for topic, n in counts.items():
            metrics.CONSUMED.labels(group=GROUP, topic=base_topic(topic)).inc(n)
        if wanted:
            self.submit(wanted)
        return len(messages)

    def _record(self, msg: Message, topic: str) -> Record | None:
        key = msg.key()
        if not key:
            return None
        user_id = key.decode("utf-8", "replace")
        if topic in (self.notifications, self.priority):
            notification_id = _header(msg, "ce_id")
            # Noted for every user, connected here or not: a client may resume on this
            # instance after seeing the notification live on another.
            if notification_id and not self.recent.saw(user_id, notification_id):
                return None  # a redelivery of a notification that already went by
            kind = sse.NOTIFICATION
        elif topic == self.read_state:
            kind = sse.READ
        else:
            return None
        if not self.wants(user_id):
            return None
        value = msg.value()
        if value is None:
            return None
        if kind == sse.NOTIFICATION:
            # Only for users streaming here: ids, never the content.
            logger.info(
                "notification to stream",
                notification_id=notification_id,
                correlation_id=_header(msg, envelope.CORRELATION_HEADER),
            )
        ts_type, ts_ms = msg.timestamp()
        return Record(
            kind=kind,
            user_id=user_id,
            value=value,
            timestamp=ts_ms / 1000 if ts_type and ts_ms > 0 else None,
        )

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            logger.warning("consumer error", error=str(err))
        return True


def _header(msg: Message, name: str) -> str | None:
    # confluent-kafka returns the headers as a list of (name, value) pairs.
    headers: list[tuple[str, bytes | str | None]] = msg.headers() or []  # type: ignore[assignment]
    for key, value in headers:
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None
