"""realtime: end-to-end latency from POST /v1/messages to the event on an SSE client, and
how many idle SSE streams one realtime process holds (and its memory per stream).

Latency: ingest, fanout, inbox and realtime run as processes on the embedded broker and
PostgreSQL; a server of 20 recipients (plus the sender) receives messages at a steady rate
for a few seconds, posted over keep-alive connections by a pacer that schedules message i
at t0 + i/rate. Latency is measured from that scheduled time (so a slow client cannot hide
queueing) to the arrival of the notification on each recipient's SSE stream: 20 samples per
message. Every process, the broker and this client share the machine's 2 cores.

Realtime alone: the same 20 streams, with NotificationCreated produced straight to
notify.notifications.v1 (no ingest, no fanout): produce call -> arrival on the stream, and
the realtime process's CPU time per delivered event.

Idle streams: N streams of N distinct users are opened on one realtime process; memory per
stream is the growth of the process's RSS divided by N.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psutil
from confluent_kafka import Producer

from bench.common import Figure
from notify_common.auth import issue_user_token
from notify_common.db.migrate import upgrade
from notify_common.kafka.config import producer_config
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings, UserAuthSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.pytest_plugin import test_env
from notify_schemas import topics

TOKEN = "bench-token"  # noqa: S105 - a throwaway token of a local benchmark
SECRET = "bench-secret-that-is-long-enough-for-hs256"  # noqa: S105 - local benchmark
SERVER = "rt-bench"
RECIPIENTS = 20
TARGET_RATE = 1000  # messages/s, the issue's goal
# Measured in turn when the target cannot be sustained here, down to one that can.
FALLBACK_RATES = (200, 50)
DURATION_S = 5.0
POSTERS = 32
IDLE_STREAMS = 10_000
# Notifications/s produced straight to realtime's topic (20 recipients each).
HOP_RATES = (50, 250)


def _metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if not line.startswith("#") and line.split("{")[0].split(" ")[0] == name:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- a minimal SSE reader (asyncio streams; a Python HTTP client would be the bottleneck) ---
async def _open_stream(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/stream?token={token} HTTP/1.1\r\nHost: bench\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stream refused: {head[:200]!r}")
    return reader, writer


async def _read_notifications(
    reader: asyncio.StreamReader, sent: dict[str, float], latencies: list[float]
) -> None:
    """Dechunk the response and record the latency of every notification event."""
    raw = b""
    body = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        raw += chunk
        while True:
            end = raw.find(b"\r\n")
            if end < 0:
                break
            size = int(raw[:end], 16)
            if len(raw) < end + 2 + size + 2:
                break
            body += raw[end + 2 : end + 2 + size]
            raw = raw[end + 2 + size + 2 :]
        now = time.perf_counter()
        *events, body = body.split(b"\n\n")
        for event in events:
            if not event.startswith(b"event: notification"):
                continue
            data = orjson.loads(event.split(b"\ndata: ", 1)[1])
            scheduled = sent.get(data["metadata"]["message_id"])
            if scheduled is not None:
                latencies.append(now - scheduled)


async def _poster(
    port: int, work: asyncio.Queue[tuple[str, bytes] | None], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (item := await work.get()) is not None:
            _mid, body = item
            writer.write(
                b"POST /v1/messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if b" 202 " not in status:
                errors.append(int(status.split()[1]))
    finally:
        writer.close()


async def _latency_run(ingest: int, realtime: int, tokens: list[str], rate: int) -> dict:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    streams = [await _open_stream(realtime, t) for t in tokens]
    readers = [asyncio.create_task(_read_notifications(r, sent, latencies)) for r, _w in streams]
    await asyncio.sleep(0.5)
    work: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    errors: list[int] = []
    posters = [asyncio.create_task(_poster(ingest, work, errors)) for _ in range(POSTERS)]
    total = int(rate * DURATION_S)
    tag = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        mid = f"{tag}-{i}"
        sent[mid] = scheduled
        body = orjson.dumps(
            {
                "message_id": mid,
                "server_id": SERVER,
                "channel_id": "general",
                "sender_id": "rt-sender",
                "sender_name": "Sender",
                "content": "A message long enough to look like chat. " * 2,
            }
        )
        work.put_nowait((mid, body))
    for _ in posters:
        work.put_nowait(None)
    await asyncio.gather(*posters)
    posted_in = time.perf_counter() - started
    expected = total * len(tokens)
    deadline = time.perf_counter() + 60
    while len(latencies) < expected and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls a list the readers fill
        await asyncio.sleep(0.1)
    for task in readers:
        task.cancel()
    for _r, w in streams:
        w.close()
    return {
        "latencies": latencies,
        "expected": expected,
        "errors": errors,
        "post_rate": total / posted_in,
    }


async def _hop_run(
    port: int, tokens: list[str], users: list[str], producer: Producer, topic: str, rate: int
) -> tuple[list[float], int]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    streams = [await _open_stream(port, t) for t in tokens]
    readers = [asyncio.create_task(_read_notifications(r, sent, latencies)) for r, _w in streams]
    await asyncio.sleep(0.5)
    total = int(rate * DURATION_S)
    started = time.perf_counter()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        mid = f"hop-{uuid.uuid4().hex[:8]}"
        sent[mid] = scheduled
        for user in users:
            nid = str(uuid.uuid4())
            value = orjson.dumps(
                {
                    "notification_id": nid,
                    "user_id": user,
                    "type": "NEW_MESSAGE",
                    "title": "New message in rt-bench #general",
                    "body": "Sender: " + "A message long enough to look like chat. " * 2,
                    "action_url": "/servers/rt-bench/channels/general",
                    "metadata": {"message_id": mid},
                    "priority": "normal",
                    "critical": False,
                    "channels": ["in_app"],
                    "created_at": now,
                }
            )
            headers = [("ce_id", nid.encode()), ("ce_specversion", b"1.0")]
            headers += [("ce_type", b"io.notify.NotificationCreated"), ("ce_source", b"/bench")]
            producer.produce(topic, value, user, headers=headers)
        producer.poll(0)
    producer.flush(30)
    expected = total * len(users)
    deadline = time.perf_counter() + 60
    while len(latencies) < expected and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls a list the readers fill
        await asyncio.sleep(0.1)
    for task in readers:
        task.cancel()
    for _r, w in streams:
        w.close()
    return latencies, expected


async def _hold_idle(port: int, tokens: list[str]) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []

    async def one(token: str) -> None:
        reader, writer = await _open_stream(port, token)
        await reader.readuntil(b"unread-count")  # the stream is fully set up
        writers.append(writer)

    for start in range(0, len(tokens), 500):
        await asyncio.gather(*(one(t) for t in tokens[start : start + 500]))
    return writers


def run(
    *, broker: infra.Broker, postgres: infra.Postgres, work: Path, runs: int, **_: object
) -> list[Figure]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This client and the realtime process (which inherits it) each hold IDLE_STREAMS sockets.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, IDLE_STREAMS + 4096)), hard))
    db_url = postgres.create_database(f"bench_rt_{uuid.uuid4().hex[:6]}")
    upgrade(db_url)
    prefix = f"r{uuid.uuid4().hex[:6]}."
    ensure_topics(CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix))
    env = test_env(broker=broker, database_url=db_url, topic_prefix=prefix)
    env.update(
        NOTIFY_SERVICE_TOKENS=f"bench:{TOKEN}",
        NOTIFY_JWT_SECRET=SECRET,
        NOTIFY_LOG_LEVEL="WARNING",
    )
    procs = {
        name: ServiceProcess(SERVICES[name], env, infra.free_port(), work / f"rt-{name}.log")
        for name in ("ingest", "fanout", "inbox", "realtime")
    }
    auth = UserAuthSettings(jwt_secret=SECRET)
    latency_figures: list[Figure] = []
    try:
        for p in procs.values():
            p.start()
        for p in procs.values():
            p.wait_ready(timeout=120)
        users = ["rt-sender", *[f"rt-user-{i}" for i in range(RECIPIENTS)]]
        with httpx.Client(
            base_url=procs["ingest"].url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:
            for uid in users:
                c.put(f"/v1/users/{uid}", json={"display_name": uid, "entitled": True})
                c.put(f"/v1/servers/{SERVER}/members/{uid}", json={})
        _wait(
            lambda: _metric(procs["fanout"].url, "notify_fanout_table_entries") >= 2 * len(users),
            timeout=120,
            what="directory in the fanout",
        )
        tokens = [issue_user_token(auth, uid) for uid in users[1:]]
        ingest_port, realtime_port = procs["ingest"].port, procs["realtime"].port
        asyncio.run(_latency_run(ingest_port, realtime_port, tokens, 50))  # warm-up

        for rate in (TARGET_RATE, *FALLBACK_RATES):
            p50 = Figure(f"realtime: POST -> SSE p50, {rate} msg/s x {RECIPIENTS}", "ms")
            p99 = Figure(f"realtime: POST -> SSE p99, {rate} msg/s x {RECIPIENTS}", "ms")
            hop = Figure(f"realtime hop: Kafka timestamp -> SSE write, mean, {rate} msg/s", "ms")
            notes = []
            sustained = True
            for _ in range(runs):
                rt_url = procs["realtime"].url
                hop_sum = _metric(rt_url, "notify_realtime_send_latency_seconds_sum")
                hop_count = _metric(rt_url, "notify_realtime_send_latency_seconds_count")
                result = asyncio.run(_latency_run(ingest_port, realtime_port, tokens, rate))
                hop_count = (
                    _metric(rt_url, "notify_realtime_send_latency_seconds_count") - hop_count
                )
                hop_sum = _metric(rt_url, "notify_realtime_send_latency_seconds_sum") - hop_sum
                hop.runs.append(1000 * hop_sum / max(1, hop_count))
                lat = result["latencies"]
                p50.runs.append(1000 * statistics.median(lat) if lat else float("nan"))
                p99.runs.append(1000 * _percentile(lat, 0.99) if lat else float("nan"))
                notes.append(
                    f"posted {result['post_rate']:,.0f}/s, {len(lat):,}/{result['expected']:,} "
                    f"arrived, {len(result['errors'])} errors"
                )
                # Sustained: every event arrived, the posts kept pace, and no backlog built
                # up (a backlog shows as a p99 of seconds).
                sustained &= (
                    len(lat) == result["expected"]
                    and not result["errors"]
                    and result["post_rate"] >= 0.95 * rate
                    and p99.runs[-1] < 1000
                )
            verdict = "sustained" if sustained else "NOT sustained on this machine"
            p50.note = f"{DURATION_S:.0f} s per run; {'; '.join(notes)}"
            p99.note = f"{verdict} (see the p50 note for the runs)"
            hop.note = "the last of the three hops; the rest is ingest, fanout and the broker"
            latency_figures += [p50, p99, hop]
            if sustained:
                break

        # Realtime alone: produced straight to its topic.
        process = psutil.Process(procs["realtime"].pid)
        settings = CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
        producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        topic = settings.topic(topics.NOTIFICATIONS)
        for rate in HOP_RATES:
            events_s = rate * RECIPIENTS
            hop50 = Figure(f"realtime alone: produce -> SSE p50, {events_s} events/s", "ms")
            hop99 = Figure(f"realtime alone: produce -> SSE p99, {events_s} events/s", "ms")
            cpu = Figure(f"realtime alone: CPU per delivered event, {events_s} events/s", "us")
            for _ in range(runs):
                cpu_before = sum(process.cpu_times()[:2])
                lat, expected = asyncio.run(
                    _hop_run(realtime_port, tokens, users[1:], producer, topic, rate)
                )
                cpu_used = sum(process.cpu_times()[:2]) - cpu_before
                hop50.runs.append(1000 * statistics.median(lat) if lat else float("nan"))
                hop99.runs.append(1000 * _percentile(lat, 0.99) if lat else float("nan"))
                cpu.runs.append(1e6 * cpu_used / max(1, len(lat)))
                hop99.note = f"{len(lat):,}/{expected:,} arrived in the last run"
            latency_figures += [hop50, hop99, cpu]

        # Idle streams on one realtime process.
        idle_tokens = [issue_user_token(auth, f"idle-{i}") for i in range(IDLE_STREAMS)]
        rss_before = process.memory_info().rss
        loop = asyncio.new_event_loop()
        held = Figure("realtime: idle SSE streams held by one process", "streams")
        per_stream = Figure("realtime: memory per idle SSE stream (RSS growth / streams)", "KiB")
        try:
            started = time.perf_counter()
            writers = loop.run_until_complete(_hold_idle(realtime_port, idle_tokens))
            opened_in = time.perf_counter() - started
            time.sleep(2)
            open_streams = _metric(procs["realtime"].url, "notify_realtime_connections")
            rss_after = process.memory_info().rss
            held.runs.append(open_streams)
            per_stream.runs.append((rss_after - rss_before) / max(1, open_streams) / 1024)
            held.note = (
                f"goal 10 000; opened in {opened_in:.1f} s; realtime RSS "
                f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
            )
            for w in writers:
                w.close()
        finally:
            loop.close()
    finally:
        for p in procs.values():
            p.stop()
    return [*latency_figures, held, per_stream]
