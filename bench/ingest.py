"""ingest throughput: POST /v1/messages/s of one process, each answered only after the
broker confirmed the write. The client is a minimal keep-alive HTTP/1.1 loop over asyncio
streams (a Python HTTP client library would be the bottleneck); it shares the 2 cores.
The limit beside it: a plain confluent-kafka loop writing the same events one at a time
with a delivery confirmation awaited per event from the same number of concurrent tasks."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson

from bench.common import Figure
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_common.testing.pytest_plugin import test_env
from notify_schemas import envelope, models, topics

TOKEN = "bench-token"  # noqa: S105 - a throwaway token of a local benchmark
CONNECTIONS = 64
REQUESTS = 6000


async def _client(port: int, bodies: list[bytes], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            writer.write(
                b"POST /v1/messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if b" 202 " not in status_line:
                errors.append(int(status_line.split()[1]))
    finally:
        writer.close()


def _bodies(n: int) -> list[bytes]:
    tag = uuid.uuid4().hex[:6]
    return [
        orjson.dumps(
            {
                "message_id": f"{tag}-{i}",
                "server_id": f"srv-{i % 50}",
                "channel_id": "general",
                "sender_id": "user-1",
                "sender_name": "User 1",
                "content": "hello " * 10,
            }
        )
        for i in range(n)
    ]


async def _load(port: int) -> tuple[float, list[int]]:
    bodies = _bodies(REQUESTS)
    errors: list[int] = []
    chunks = [bodies[i::CONNECTIONS] for i in range(CONNECTIONS)]
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, c, errors) for c in chunks))
    return REQUESTS / (time.perf_counter() - started), errors


async def _plain(settings: CommonSettings) -> float:
    producer = EventProducer(settings)
    producer.start()
    topic = settings.topic(topics.MESSAGE_CREATED)
    queue = list(range(REQUESTS))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            event = models.MessageCreated(
                message_id=f"p-{i}",
                server_id=f"srv-{i % 50}",
                channel_id="general",
                sender_id="user-1",
                sender_name="User 1",
                content="hello " * 10,
                created_at=envelope.now(),
            )
            value, headers = envelope.encode(
                event, ce_type="io.notify.MessageCreated", source="/bench"
            )
            await producer.publish(topic, key=event.server_id, value=value, headers=headers)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    rate = REQUESTS / (time.perf_counter() - started)
    producer.close()
    return rate


def run(*, broker: infra.Broker, work: Path, runs: int, **_: object) -> list[Figure]:
    prefix = f"i{uuid.uuid4().hex[:6]}."
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
    ensure_topics(settings)
    env = test_env(broker=broker, database_url="unused", topic_prefix=prefix)
    env["NOTIFY_SERVICE_TOKENS"] = f"bench:{TOKEN}"
    env["NOTIFY_LOG_LEVEL"] = "WARNING"
    port = infra.free_port()
    proc = ServiceProcess(SERVICES["ingest"], env, port, work / "ingest.log").start()
    figure = Figure(
        "ingest: POST /v1/messages/s, confirmed, 1 process",
        "req/s",
        note=f"{CONNECTIONS} keep-alive connections",
    )
    try:
        proc.wait_ready(timeout=60)
        for r in range(runs + 1):
            rate, errors = asyncio.run(_load(port))
            if errors:
                raise RuntimeError(f"ingest answered {len(errors)} non-202s: {errors[:5]}")
            if r:  # first run: warm-up
                figure.runs.append(rate)
    finally:
        proc.stop()
    limit = Figure("limit: confirmed produce per event, same concurrency", "events/s")
    for _ in range(runs):
        limit.runs.append(asyncio.run(_plain(settings)))
    return [figure, limit]
