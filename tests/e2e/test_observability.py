"""What an SRE relies on, checked on the whole pipeline with every service a real process:

* every service's real /metrics passes `promtool check metrics`;
* one correlation id, sent with the upstream request, is in the logs of every service that
  handled the message (ingest, fanout, inbox, realtime, push-sender, email-digest), so a
  single grep follows a message from the request to each delivery;
* no secret (JWT secret, VAPID private key, SMTP password, service token, database
  password when there is one) is in any log or any /metrics output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from notify_common.auth import issue_user_token
from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_common.testing.sse import SSEClient
from notify_schemas import envelope, topics
from notify_schemas.models import MessageCreated
from tests.e2e.conftest import OUTPUT, wait_until
from tests.e2e.fullstack import ALL_SERVICES, Full, add_members, email_of, full_stack

pytestmark = pytest.mark.e2e

PROMTOOL = "/usr/bin/promtool"
LOG_DIR = OUTPUT / "e2e" / "test_observability"
SERVER = "obs-srv"
ALICE, BOB, SENDER = "obs-alice", "obs-bob", "obs-sender"


@pytest.fixture(scope="module")
def full(broker, postgres_server) -> Iterator[Full]:
    for old in LOG_DIR.glob("*.log"):
        old.unlink()  # the greps below must only see this run
    with full_stack(broker, postgres_server, LOG_DIR) as f:
        add_members(f, SERVER, [ALICE, BOB, SENDER])
        yield f


def log_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a third-party line that is not ours
    return out


def test_every_service_metrics_pass_promtool(full: Full, tmp_path: Path):
    if not Path(PROMTOOL).exists() and not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    promtool = PROMTOOL if Path(PROMTOOL).exists() else str(shutil.which("promtool"))
    # Traffic first, so that the labelled series exist and are checked too.
    with full.stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": "obs-metrics-1",
                "server_id": SERVER,
                "channel_id": "general",
                "sender_id": SENDER,
                "sender_name": "Sender",
                "content": "metrics traffic",
            },
        )
        assert r.status_code == 202, r.text
    wait_until(
        lambda: len(full.receiver.delivered()) >= 2,
        timeout=60,
        what="pushes for the metrics traffic",
    )
    problems = {}
    for service in ALL_SERVICES:
        text = httpx.get(full.stack.url(service) + "/metrics", timeout=5).text
        assert "# TYPE" in text, service
        (tmp_path / f"{service}.prom").write_text(text)
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0 or result.stdout.strip() or result.stderr.strip():
            problems[service] = (result.returncode, result.stdout + result.stderr)
    assert not problems, problems


def test_one_correlation_id_follows_a_message_through_every_service(full: Full):
    stack = full.stack
    correlation = f"corr-{uuid.uuid4().hex}"
    token = issue_user_token(stack.auth, ALICE)
    mails_before = len(full.sink.to(email_of(ALICE)))
    with SSEClient(stack.url("realtime") + "/v1/stream", token=token) as sse:
        sse.connect()
        with stack.ingest() as ingest:
            r = ingest.post(
                "/v1/announcements",
                headers={"X-Request-ID": correlation},
                json={
                    "title": "Maintenance tonight",
                    "body": "The service will be down for ten minutes.",
                    "user_ids": [ALICE],
                    "critical": True,
                },
            )
            assert r.status_code == 202, r.text
            assert r.headers["x-request-id"] == correlation
        [event] = sse.take("notification", timeout=30)
        notification_id = json.loads(event.data)["notification_id"]

    def in_feed() -> bool:
        with stack.user(ALICE) as c:
            items = c.get("/v1/notifications").json()["items"]
        return any(n["notification_id"] == notification_id for n in items)

    wait_until(in_feed, timeout=30, what="the announcement in the feed")
    wait_until(
        lambda: any(
            p.message and p.message["data"]["notification_id"] == notification_id
            for p in full.receiver.delivered()
        ),
        timeout=30,
        what="the push",
    )
    wait_until(
        lambda: len(full.sink.to(email_of(ALICE))) > mails_before,
        timeout=60,
        what="the critical email",
    )

    def logged(service: str) -> list[dict]:
        return [
            line
            for line in log_lines(stack.procs[service].log_path)
            if line.get("correlation_id") == correlation
        ]

    # The deliveries are logged once their outcome is recorded: give the last ones a moment.
    wait_until(lambda: all(logged(s) for s in ALL_SERVICES), timeout=15, what="every service's log")
    for service in ALL_SERVICES:
        lines = logged(service)
        assert lines, f"{service} never logged correlation id {correlation}"
        assert all(line["level"] in ("info", "warning", "error") for line in lines)
        assert all(line["service"] == service for line in lines)
    for service in ("inbox", "realtime", "push-sender", "email-digest"):
        assert any(line.get("notification_id") == notification_id for line in logged(service)), (
            service
        )
    # Content never goes to the logs: neither the body nor the recipient's address.
    for service in ALL_SERVICES:
        text = stack.procs[service].log_path.read_text(errors="replace")
        assert "down for ten minutes" not in text, service
        assert email_of(ALICE) not in text, service


def test_an_upstream_event_without_a_correlation_id_is_followed_by_its_event_id(full: Full):
    """Upstream apps may publish to Kafka directly, with no correlation header: the source
    event's ce_id then stands in for it from the fanout on."""
    stack = full.stack
    event_id = f"upstream-{uuid.uuid4().hex}"
    event = MessageCreated(
        message_id=f"obs-direct-{uuid.uuid4().hex[:8]}",
        server_id=SERVER,
        channel_id="general",
        sender_id=SENDER,
        sender_name="Sender",
        content="published straight to Kafka",
        mentions=[BOB],
        created_at=datetime.now(UTC),
    )
    value, headers = envelope.encode(
        event, ce_type="io.notify.MessageCreated", source="/upstream/chat", event_id=event_id
    )
    assert envelope.CORRELATION_HEADER not in dict(headers)
    settings = CommonSettings(
        kafka_bootstrap=stack.env["NOTIFY_KAFKA_BOOTSTRAP"],
        topic_prefix=stack.env["NOTIFY_TOPIC_PREFIX"],
    )
    token = issue_user_token(stack.auth, BOB)
    with SSEClient(stack.url("realtime") + "/v1/stream", token=token) as sse:
        sse.connect()
        producer = EventProducer(settings)
        try:
            producer.produce(
                settings.topic(topics.MESSAGE_CREATED), key=SERVER, value=value, headers=headers
            )
            producer.flush(10)
        finally:
            producer.close(5)
        [streamed] = sse.take("notification", timeout=30)
    notification_id = json.loads(streamed.data)["notification_id"]
    services = ("fanout", "inbox", "realtime", "push-sender", "email-digest")

    def logged(service: str) -> list[dict]:
        return [
            line
            for line in log_lines(stack.procs[service].log_path)
            if line.get("correlation_id") == event_id
        ]

    wait_until(lambda: all(logged(s) for s in services), timeout=30, what="every service's log")
    for service in services[1:]:
        assert any(line.get("notification_id") == notification_id for line in logged(service)), (
            service
        )


def test_no_secret_is_in_any_log_or_metrics(full: Full):
    # After the other tests (module order), so every path that might log has run: pushes,
    # SMTP logins, token checks, database connections. A refused token is also tried.
    r = httpx.get(
        full.stack.url("inbox") + "/v1/notifications",
        headers={"Authorization": "Bearer " + full.stack.env["NOTIFY_JWT_SECRET"]},
    )
    assert r.status_code == 401
    secrets = full.secrets()
    assert {"jwt secret", "service token", "vapid private key", "smtp password"} <= set(secrets)
    texts = {
        f"{s} log": full.stack.procs[s].log_path.read_text(errors="replace") for s in ALL_SERVICES
    }
    texts |= {
        f"{s} /metrics": httpx.get(full.stack.url(s) + "/metrics", timeout=5).text
        for s in ALL_SERVICES
    }
    # The logs are not empty: a vacuous pass proves nothing.
    assert all(len(texts[f"{s} log"]) > 100 for s in ALL_SERVICES)
    leaks = [
        f"{secret} in {where}"
        for secret, value in secrets.items()
        for where, text in texts.items()
        if value in text
    ]
    assert not leaks, leaks
