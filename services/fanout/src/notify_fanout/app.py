"""The fanout as a Faust app: directory tables built from the compacted topics, and the
message/announcement streams joined against them on the same worker (co-partitioned).

Tables (memory store, rebuilt from their changelogs on start and rebalance):
* users, user_prefs, channel_levels: GlobalTables: every worker holds all of them, since a
  recipient of any server may be any user;
* members: keyed {server_id}/{user_id}, partitioned by server_id through the fanout's own
  repartition topic, so partition p of the members table sits on the worker that consumes
  partition p of notify.message-created.v1 (both keyed by server_id, murmur2, same count).

Output goes through one confluent-kafka producer (see output.py); each batch of source
events is acknowledged to Faust only after all of its notifications were confirmed, so a
crash replays the batch (at-least-once; the deterministic notification ids make the replay
harmless downstream).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from notify_common import logging as log
from notify_common import metrics
from notify_common.kafka.codec import InvalidEvent, dead_letter_headers, decode
from notify_common.kafka.producer import PublishError
from notify_common.kafka.producer import base_topic as _base
from notify_common.templates import TemplateError, TemplateRegistry
from notify_fanout.contiguity import ContiguityGuard, read_range
from notify_fanout.directory import Directory, MemberIndex, apply_membership
from notify_fanout.output import NotificationOutput
from notify_fanout.rules import Fanout, Suppressed
from notify_fanout.settings import FanoutSettings
from notify_fanout.watchdog import StallWatch
from notify_schemas import envelope, topics

logger = log.get(__name__)

GROUP = "notify-fanout"


def broker_urls(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def _use_fetch_wait(ms: int) -> None:
    """Faust creates its aiokafka consumer with a fixed 1.5 s fetch wait; on a quiet
    partition every hop through the fanout then costs up to that long (measured: p50 462 ms
    end to end at 20 msg/s). Give the consumer class Faust instantiates our wait instead:
    the same trade of latency for idle fetches as every other consumer here
    (NOTIFY_KAFKA_FETCH_WAIT_MS)."""
    import aiokafka
    from faust.transport.drivers import aiokafka as faust_aiokafka

    base = getattr(aiokafka.AIOKafkaConsumer, "notify_original", aiokafka.AIOKafkaConsumer)

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    Consumer.notify_original = base

    faust_aiokafka.aiokafka.AIOKafkaConsumer = Consumer


class MisroutedEvent(ValueError):
    """A source event on a partition other than its server's (wrong partitioner or key)."""


def _consumer_view(consumer: Any, tp: TP) -> dict[str, Any]:
    """What Faust and its aiokafka client believe about one partition (for stall logs)."""
    view: dict[str, Any] = {}
    try:
        view["faust_paused"] = tp in consumer._paused_partitions
        view["faust_active"] = tp in consumer._get_active_partitions()
        view["faust_read_offset"] = consumer._read_offset.get(tp)
        view["flow_active"] = consumer.flow_active
        client = consumer._thread._consumer
        state = client._subscription.subscription.assignment.state_value(tp)
        view["client_paused"] = state.paused
        view["client_position"] = state._position
        view["client_buffered"] = tp in client._fetcher._records
    except Exception as exc:  # diagnostics only; internals may change
        view["view_error"] = repr(exc)
    return view


def build(settings: FanoutSettings) -> faust.App:
    partitions = topics.topic(topics.MESSAGE_CREATED).partitions
    conf: dict[str, Any] = {
        "broker": broker_urls(settings.kafka_bootstrap),
        "store": "memory://",
        "topic_partitions": partitions,
        "topic_replication_factor": settings.fanout_replication_factor,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.kafka_session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.kafka_heartbeat_interval_ms / 1000,
        "web_port": settings.fanout_port,
        "web_bind": settings.http_host,
        "web_in_thread": False,
        "producer_acks": -1,
        # Memory store: nothing durable is written locally; keep Faust's folder out of the cwd.
        "datadir": settings.fanout_data_dir,
    }
    if settings.kafka_single_record_batches:
        # Changelog readers trust the high watermark; on a broker that under-reports it after
        # a multi-record batch (embedded Tansu) every record must be its own batch, or a
        # restarted worker recovers its tables short (see ARCHITECTURE.md).
        conf["producer_max_batch_size"] = 16
    _use_fetch_wait(settings.kafka_fetch_wait_ms)
    app = faust.App(settings.group(GROUP), **conf)

    def raw_topic(name: str, *, acks: bool = True) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            acks=acks,
        )

    users_topic = raw_topic(topics.USERS)
    memberships_topic = raw_topic(topics.MEMBERSHIPS)
    channel_prefs_topic = raw_topic(topics.CHANNEL_PREFERENCES)
    user_prefs_topic = raw_topic(topics.USER_PREFERENCES)
    # The fanout commits these itself, once a batch's outputs are confirmed (see
    # contiguity.py): acks=False keeps Faust's own offset bookkeeping away from them.
    messages_topic = raw_topic(topics.MESSAGE_CREATED, acks=False)
    announcements_topic = raw_topic(topics.ANNOUNCEMENT_REQUESTED, acks=False)
    # Memberships re-keyed by server_id (the fanout's own repartition topic).
    members_by_server = app.topic(
        f"{settings.group(GROUP)}-members-by-server",
        key_type=str,
        partitions=partitions,
        internal=True,
    )

    users = app.GlobalTable("users", key_type=str, default=None)
    user_prefs = app.GlobalTable("user-prefs", key_type=str, default=None)
    channel_levels = app.GlobalTable("channel-levels", key_type=str, default=None)
    members = app.Table("members", key_type=str, default=None, partitions=partitions)
    index = MemberIndex()

    output = NotificationOutput(settings)
    # Loaded (and checked) once at start: a broken override stops the worker here.
    templates = TemplateRegistry.load(settings.templates_dir)
    fanout_ready = asyncio.Event()
    dlq_topic = settings.topic(topics.DLQ)
    all_models = {settings.topic(t.name): t.model for t in topics.all_topics().values()}

    def store(table: faust.types.CollectionT) -> dict[str, Any]:
        return table.data.data  # type: ignore[attr-defined]

    def directory() -> Directory:
        return Directory(
            users=store(users),
            channel_levels=store(channel_levels),
            user_prefs=store(user_prefs),
            members=index,
        )

    @members.on_recover
    async def rebuild_index() -> None:
        index.rebuild(store(members).keys())
        fanout_ready.set()
        logger.info(
            "member index rebuilt",
            members=len(index),
            users=len(store(users)),
            channel_levels=len(store(channel_levels)),
            user_prefs=len(store(user_prefs)),
        )

    def decode_or_dead(
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        tombstones: bool,
    ) -> Any:
        try:
            return decode(
                model=all_models.get(topic),
                key=key,
                value=value,
                headers=headers,
                allow_tombstones=tombstones,
            )
        except InvalidEvent as exc:
            dead_letter(topic, partition, offset, key, value, headers, exc)
            return None

    def dead_letter(
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        exc: Exception,
    ) -> None:
        """The record as received, to the DLQ with the reason (confirmed with the batch)."""
        output.producer.produce(
            dlq_topic,
            key=key,
            value=value,
            headers=dead_letter_headers(
                headers=headers,
                topic=topic,
                partition=partition,
                offset=offset,
                group=settings.group(GROUP),
                exc=exc,
                attempts=1,
            ),
        )
        metrics.DLQ_WRITES.labels(
            group=GROUP, topic=_base(topic), error_class=type(exc).__name__
        ).inc()
        logger.warning("dead-lettered", topic=topic, offset=offset, reason=str(exc)[:200])

    def decoded_or_dead(event: faust.EventT, *, tombstones: bool) -> Any:
        m = event.message
        return decode_or_dead(
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            key=m.key,
            value=m.value,
            headers=m.headers,
            tombstones=tombstones,
        )

    async def directory_stream(stream: faust.StreamT) -> AsyncIterator[Any]:
        async for event in stream.events():
            mark = output.mark()
            decoded = decoded_or_dead(event, tombstones=True)
            if decoded is not None:
                yield decoded
                continue
            # Dead-lettered: confirm the DLQ record before Faust may commit past it (a rare
            # path; the flush also waits for whatever else the producer holds). A failed
            # write is written again.
            while True:
                try:
                    await asyncio.to_thread(output.flush, since=mark)
                    break
                except PublishError as exc:
                    logger.warning("dead letter not confirmed, retrying", error=str(exc))
                    await asyncio.sleep(1.0)
                    mark = output.mark()
                    decoded_or_dead(event, tombstones=True)

    @app.agent(users_topic)
    async def on_user(stream: faust.StreamT) -> None:
        async for d in directory_stream(stream):
            if d.event is None:
                users.pop(d.key, None)
            else:
                users[d.event.user_id] = d.event.model_dump(mode="json")

    @app.agent(user_prefs_topic)
    async def on_user_prefs(stream: faust.StreamT) -> None:
        async for d in directory_stream(stream):
            if d.event is None:
                user_prefs.pop(d.key, None)
            else:
                user_prefs[d.event.user_id] = d.event.model_dump(mode="json")

    @app.agent(channel_prefs_topic)
    async def on_channel_pref(stream: faust.StreamT) -> None:
        async for d in directory_stream(stream):
            if d.event is None or d.event.level == "all":
                # "all" is the default: only exceptions are stored.
                channel_levels.pop(
                    d.key if d.event is None else f"{d.event.user_id}/{d.event.channel_id}", None
                )
            else:
                channel_levels[f"{d.event.user_id}/{d.event.channel_id}"] = d.event.level

    @app.agent(memberships_topic)
    async def on_membership(stream: faust.StreamT) -> None:
        async for d in directory_stream(stream):
            if d.event is None:
                server_id, _, user_id = (d.key or "").partition("/")
                if not server_id or not user_id:
                    continue
                change = {"server_id": server_id, "user_id": user_id, "active": False, "role": ""}
            else:
                change = {
                    "server_id": d.event.server_id,
                    "user_id": d.event.user_id,
                    "active": d.event.active,
                    "role": d.event.role,
                }
            await members_by_server.send(key=change["server_id"], value=change)

    @app.agent(members_by_server)
    async def on_member_change(stream: faust.StreamT) -> None:
        async for change in stream:
            apply_membership(
                members,
                index,
                server_id=change["server_id"],
                user_id=change["user_id"],
                active=change["active"],
                role=change["role"],
            )

    def committed(topic: str, partition: int) -> int | None:
        # Faust refreshes this from the broker on every assignment (perform_seek).
        offset = app.consumer._committed_offset.get(TP(topic, partition))  # type: ignore[attr-defined]
        return int(offset) if offset is not None else None

    guard = ContiguityGuard(baseline=committed)
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))

    def partition_of(server_id: str) -> int:
        return int(partitioner(server_id.encode(), all_partitions, all_partitions))

    watch = StallWatch(stall_after_s=settings.fanout_stall_after_s)
    source_topics = {messages_topic.get_topic_name(), announcements_topic.get_topic_name()}

    async def commit_sources(done: dict[TP, int]) -> None:
        """Commit the next offset of every source partition the batch advanced."""
        if done:
            await app.consumer._commit(done)  # type: ignore[attr-defined]

    # mode's signal typing does not admit async receivers with keyword arguments.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_positions(_app: faust.App, revoked: Any, **_: Any) -> None:
        guard.reset()
        watch.reset()

    def fan_out(kind: str, fan: Fanout, suppressed: Counter[str], decoded: Any) -> int:
        if decoded is None:
            return 0
        correlation_id = decoded.headers.get(envelope.CORRELATION_HEADER) or decoded.headers.get(
            "ce_id"
        )
        output.begin(correlation_id)
        # Who was not notified and why, per source event: one record per suppressed user
        # (the suppression log) and the counts for its summary (admin message status),
        # then added to the batch's counts for the metrics.
        own = Suppressed()
        event = decoded.event
        if kind == "message":
            emitted = fan.message(event, output.emit, own, output.emit_priority)
            source_id, channel_id = event.message_id, event.channel_id
        else:
            emitted = fan.announcement(event, output.emit, own, output.emit_priority)
            source_id, channel_id = event.announcement_id, None
        counts = own.counts()
        suppressed.update(counts)
        output.suppressions(
            source_id=source_id,
            kind=kind,
            server_id=event.server_id,
            channel_id=channel_id,
            users=own.users,
            correlation_id=correlation_id,
        )
        output.summary(
            source_id=source_id,
            kind=kind,
            recipients=emitted,
            suppressed=counts,
            correlation_id=correlation_id,
        )
        # One line per source event (never per recipient): ids and counts, never content.
        logger.info(
            "fanned out",
            kind=kind,
            source_id=source_id,
            correlation_id=correlation_id,
            recipients=emitted,
        )
        return emitted

    def fan_out_record(
        kind: str,
        fan: Fanout,
        suppressed: Counter[str],
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
    ) -> int:
        """Decode one source record and fan it out; a record that cannot be decoded, or
        whose notification text cannot be rendered (a template variable without a value),
        goes to the DLQ with the reason instead of reaching anyone half-done."""
        decoded = decode_or_dead(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=headers,
            tombstones=False,
        )
        if decoded is not None:
            server_id = getattr(decoded.event, "server_id", None)
            if server_id is not None and partition != partition_of(server_id):
                # The server's members live on the partition the murmur2 partitioner picks;
                # anywhere else the worker may hold none of them and would notify nobody.
                dead_letter(
                    topic,
                    partition,
                    offset,
                    key,
                    value,
                    headers,
                    MisroutedEvent(
                        f"server {server_id!r} belongs on partition {partition_of(server_id)}, "
                        f"not {partition}: produce with the key server_id and the murmur2 "
                        "partitioner (the Java client's default; librdkafka: murmur2_random)"
                    ),
                )
                return 0
        try:
            return fan_out(kind, fan, suppressed, decoded)
        except TemplateError as exc:
            dead_letter(topic, partition, offset, key, value, headers, exc)
            return 0

    async def fan_out_batches(stream: faust.StreamT, kind: str) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.fanout_batch_size, within=settings.fanout_batch_wait_s
        ):
            watch.batch_started()
            try:
                await fan_out_batch(events, kind)
            finally:
                watch.batch_finished()

    async def fan_out_batch(events: list[faust.EventT], kind: str) -> None:
        started = time.perf_counter()
        # The batch's source records in order, with any skipped range read back in front of
        # the record after it (see contiguity.py).
        records: list[dict[str, Any]] = []
        done: dict[TP, int] = {}
        for event in events:
            m = event.message
            watch.taken(m.topic, m.partition, m.offset)
            done[m.tp] = max(done.get(m.tp, 0), m.offset + 1)
            gap = guard.check(m.topic, m.partition, m.offset)
            if gap is not None:
                # Records were skipped before this one: fan them out first, from the
                # broker, so they are durable before this batch is acknowledged.
                missed = await asyncio.to_thread(read_range, settings, gap)
                metrics.FANOUT_GAPS_REPAIRED.inc()
                metrics.FANOUT_GAP_RECORDS.inc(len(missed))
                logger.warning(
                    "source gap repaired",
                    topic=gap.topic,
                    partition=gap.partition,
                    start=gap.start,
                    end=gap.end,
                    records=len(missed),
                )
                records += [
                    {
                        "topic": r.topic() or "",
                        "partition": r.partition() or 0,
                        "offset": r.offset() or 0,
                        "key": r.key(),
                        "value": r.value(),
                        "headers": r.headers(),
                    }
                    for r in missed
                ]
            records.append(
                {
                    "topic": m.topic,
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": m.key,
                    "value": m.value,
                    "headers": m.headers,
                }
            )
        attempt = 0
        while True:
            suppressed: Counter[str] = Counter()
            fan = Fanout(directory(), templates)
            mark = output.mark()
            emitted = sum(fan_out_record(kind, fan, suppressed, **r) for r in records)
            try:
                await asyncio.to_thread(output.flush, since=mark)
                break
            except PublishError as exc:
                # Some outputs failed and are gone from the producer: flushing again would
                # confirm nothing. Fan the whole batch out again (same notification ids, so
                # what did arrive is de-duplicated downstream) until all are confirmed.
                attempt += 1
                logger.warning(
                    "batch outputs not confirmed; fanning it out again",
                    error=str(exc),
                    attempt=attempt,
                )
                await asyncio.sleep(min(10.0, 0.2 * 2**attempt))
        await commit_sources(done)
        metrics.FANOUT_EVENTS.labels(kind=kind).inc(len(events))
        metrics.FANOUT_RECIPIENTS.inc(emitted)
        for reason, count in suppressed.items():
            metrics.FANOUT_SUPPRESSED.labels(reason=reason).inc(count)
        metrics.HANDLER_DURATION.labels(group=GROUP).observe(time.perf_counter() - started)
        logger.debug("batch fanned out", kind=kind, events=len(events), emitted=emitted)

    @app.agent(messages_topic)
    async def on_message(stream: faust.StreamT) -> None:
        await fan_out_batches(stream, "message")

    @app.agent(announcements_topic)
    async def on_announcement(stream: faust.StreamT) -> None:
        await fan_out_batches(stream, "announcement")

    @app.timer(settings.fanout_stall_check_s)
    async def check_stalls() -> None:
        if app.rebalancing or not fanout_ready.is_set():
            return
        consumer = app.consumer
        tps = {tp for tp in consumer.assignment() if tp.topic in source_topics}
        watch.assigned({(tp.topic, tp.partition) for tp in tps}, committed)
        if not tps:
            return
        try:
            ends = await consumer.highwaters(*tps)
        except Exception as exc:  # the broker may be away; try next time
            logger.debug("stall check skipped", error=str(exc))
            return
        stalled = watch.stalled({(tp.topic, tp.partition): int(end) for tp, end in ends.items()})
        for topic, partition, position in stalled:
            tp = TP(topic, partition)
            metrics.FANOUT_STALLS.inc()
            logger.warning(
                "source partition stalled, seeking",
                topic=topic,
                partition=partition,
                position=position,
                end=ends.get(tp),
                **_consumer_view(consumer, tp),
            )
            consumer.resume_partitions([tp])
            await consumer.seek(tp, position)

    @app.timer(1.0)
    async def report_tables() -> None:
        metrics.FANOUT_TABLE_ENTRIES.labels(table="users").set(len(store(users)))
        metrics.FANOUT_TABLE_ENTRIES.labels(table="members").set(len(index))
        metrics.FANOUT_TABLE_ENTRIES.labels(table="channel_levels").set(len(store(channel_levels)))
        metrics.FANOUT_TABLE_ENTRIES.labels(table="user_prefs").set(len(store(user_prefs)))

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            problems = []
            if app.rebalancing:
                problems.append("rebalancing")
            if not fanout_ready.is_set():
                problems.append("tables not recovered")
            if problems:
                return self.json({"status": "not ready", "problems": problems}, status=503)
            return self.json({"status": "ready"})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp takes the charset separately from the media type.
            media_type, _, _ = CONTENT_TYPE_LATEST.partition("; charset")
            return self.bytes(generate_latest(), content_type=media_type)

    return app
