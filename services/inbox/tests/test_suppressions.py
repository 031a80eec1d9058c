"""The suppression log against the real broker and PostgreSQL: the status consumer records
who was not notified and why (the fanout's per-user records and the channels' held or
dropped deliveries) once however often they arrive; the admin API lists them per message
and per user; old rows are deleted by the retention task."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy import Engine, func, insert, select

from notify_common.auth import issue_user_token
from notify_common.db.models import SuppressionRow
from notify_common.kafka.producer import EventProducer
from notify_common.kafka.runner import Backoff, ConsumerRunner
from notify_inbox.admin_consumers import build_status_runner
from notify_inbox.app import build_app
from notify_inbox.consumer import persist
from notify_inbox.settings import InboxSettings
from notify_inbox.suppression_log import Retention, expire
from notify_schemas import envelope, topics
from notify_schemas.models import DeliveryRecorded, NotificationSuppressed, notification_id_for

pytestmark = pytest.mark.integration


@contextmanager
def running(runner: ConsumerRunner) -> Iterator[ConsumerRunner]:
    runner.backoff = Backoff(base=0.05, cap=0.5)
    thread = threading.Thread(target=runner.run, name="test-status-consumer")
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(15)
        assert not thread.is_alive(), "the consumer did not stop"


def admin(settings: InboxSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_user_token(settings, 'u-ops', admin=True)}"}


def send(producer: EventProducer, settings: InboxSettings, topic: str, key: str, event: BaseModel):
    ce_type = topics.topic(topic).ce_type
    assert ce_type
    value, headers = envelope.encode(event, ce_type=ce_type, source="/tests")
    producer.produce(settings.topic(topic), key=key, value=value, headers=headers)


def rows(engine: Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        return {
            (r.user_id, r.channel, r.outcome, r.reason, r.source_id)
            for r in conn.execute(select(SuppressionRow))
        }


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(SuppressionRow)) or 0


def recorded(level: str) -> float:
    return REGISTRY.get_sample_value("notify_admin_suppressions_total", {"level": level}) or 0.0


def suppressed(
    user: str, reason: str, *, at: datetime, source: str = "m-9"
) -> NotificationSuppressed:
    return NotificationSuppressed(
        source_id=source,
        kind="message",
        user_id=user,
        reason=reason,
        server_id="s-1",
        channel_id="c-1",
        at=at,
    )


@pytest.fixture
def api_client(settings: InboxSettings, engine: Engine) -> Iterator[TestClient]:
    api_only = settings.model_copy(
        update={"inbox_consumer_enabled": False, "inbox_relay_enabled": False}
    )
    with TestClient(build_app(api_only, engine=engine)) as client:
        yield client


def test_the_log_records_each_decision_once_and_the_api_lists_it(
    settings, engine, notification, wait_until, api_client
):
    """A message suppressed for three members, one recipient's push dropped and email
    held: the log has one row per (user, channel) although every record came twice, and
    the admin sees them per message and per user."""
    now = datetime.now(UTC)
    meta = {"message_id": "m-9", "server_id": "s-1", "channel_id": "c-1", "is_mentioned": False}
    told = notification("u-paid", metadata=meta, channels=["in_app", "push", "email"])
    told = told.model_copy(update={"notification_id": notification_id_for("m-9", "u-paid")})
    assert persist(engine, [told]) == 1
    fanout = [
        suppressed("u-free", "not_entitled", at=now),
        suppressed("u-muted", "channel_muted", at=now),
        suppressed("u-quiet", "not_mentioned", at=now),
    ]

    def delivery(channel: str, outcome: str, reason: str | None, seconds: int) -> DeliveryRecorded:
        return DeliveryRecorded(
            notification_id=told.notification_id,
            user_id="u-paid",
            channel=channel,  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            attempt=1,
            at=now + timedelta(seconds=seconds),
        )

    deliveries = [
        delivery("push", "deferred", "quiet hours", 1),
        delivery("push", "suppressed", "no active push subscription", 2),  # the latest wins
        delivery("email", "deferred", "held for the daily digest", 1),
        delivery("in_app", "sent", None, 1),  # delivered: not a suppression
    ]
    before = {level: recorded(level) for level in ("fanout", "channel")}
    producer = EventProducer(settings)
    with running(build_status_runner(settings, engine)):
        for _ in range(2):  # the second round is a replayed batch and a redelivery
            for e in fanout:
                send(producer, settings, topics.SUPPRESSIONS, e.user_id, e)
            for d in deliveries:
                send(producer, settings, topics.DELIVERIES, d.user_id, d)
        # Behind u-free's records on their partition (same key), a decision about another
        # message: once it is in, u-free's copies were read too.
        sentinel = suppressed("u-free", "not_mentioned", at=now, source="m-sentinel")
        send(producer, settings, topics.SUPPRESSIONS, "u-free", sentinel)
        producer.flush()
        expected = {
            ("u-free", "*", "suppressed", "not_entitled", "m-9"),
            ("u-muted", "*", "suppressed", "channel_muted", "m-9"),
            ("u-quiet", "*", "suppressed", "not_mentioned", "m-9"),
            ("u-paid", "push", "suppressed", "no active push subscription", None),
            ("u-paid", "email", "deferred", "held for the daily digest", None),
            ("u-free", "*", "suppressed", "not_mentioned", "m-sentinel"),
        }
        # Every decision only moves towards this state (the latest one per channel wins,
        # copies change nothing), so reaching it means nothing is left to change it.
        wait_until(lambda: rows(engine) == expected, what="the log's rows")
    producer.close()
    assert count(engine) == len(expected)  # one row per decision, not per record
    with engine.begin() as conn:  # the sentinel was only there to sequence the test
        conn.execute(
            SuppressionRow.__table__.delete().where(SuppressionRow.source_id == "m-sentinel")
        )
    assert recorded("fanout") - before["fanout"] >= 3
    assert recorded("channel") - before["channel"] >= 2

    headers = admin(settings)
    r = api_client.get("/v1/admin/messages/m-9/suppressions", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    listed = {(i["user_id"], i["channel"], i["reason"]) for i in body["items"]}
    assert listed == {
        ("u-free", None, "not_entitled"),
        ("u-muted", None, "channel_muted"),
        ("u-quiet", None, "not_mentioned"),
        ("u-paid", "push", "no active push subscription"),
        ("u-paid", "email", "held for the daily digest"),
    }
    # A channel's row names its message through the notification it is about.
    for item in body["items"]:
        assert (item["source_id"], item["kind"], item["server_id"]) == ("m-9", "message", "s-1")
    by_reason = api_client.get(
        "/v1/admin/messages/m-9/suppressions", params={"reason": "channel_muted"}, headers=headers
    ).json()
    assert [i["user_id"] for i in by_reason["items"]] == ["u-muted"]

    mine = api_client.get("/v1/admin/users/u-paid/suppressions", headers=headers).json()
    # Newest first: the push decision (now + 2 s) before the email one (now + 1 s).
    assert [(i["channel"], i["outcome"]) for i in mine["items"]] == [
        ("push", "suppressed"),
        ("email", "deferred"),
    ]
    assert (
        api_client.get("/v1/admin/messages/m-none/suppressions", headers=headers).status_code == 404
    )


def add(engine: Engine, *entries: tuple[str, str, datetime]) -> None:
    """Log rows as the consumer writes them: (user_id, reason, at), one source each."""
    with engine.begin() as conn:
        conn.execute(
            insert(SuppressionRow),
            [
                {
                    "notification_id": notification_id_for(f"m-{i}", user),
                    "channel": "*",
                    "user_id": user,
                    "source_id": f"m-{i}",
                    "kind": "message",
                    "server_id": "s-1",
                    "channel_id": "c-1",
                    "outcome": "suppressed",
                    "reason": reason,
                    "at": at,
                }
                for i, (user, reason, at) in enumerate(entries)
            ],
        )


def test_a_users_log_pages_newest_first_and_filters(api, db_settings, engine):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    reasons = ["not_entitled", "channel_muted", "not_mentioned"]
    # 7 rows of u-eve (two at the same instant: the id breaks the tie), one of someone else.
    eve = [("u-eve", reasons[i % 3], start + timedelta(minutes=min(i, 5))) for i in range(7)]
    add(engine, *eve, ("u-other", "not_entitled", start))
    headers = admin(db_settings)

    seen: list[dict] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = api.get("/v1/admin/users/u-eve/suppressions", params=params, headers=headers)
        assert r.status_code == 200, r.text
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and len({i["source_id"] for i in seen}) == 7
    assert {i["user_id"] for i in seen} == {"u-eve"}
    ats = [datetime.fromisoformat(i["at"]) for i in seen]
    assert ats == sorted(ats, reverse=True)

    muted = api.get(
        "/v1/admin/users/u-eve/suppressions", params={"reason": "channel_muted"}, headers=headers
    ).json()["items"]
    assert len(muted) == 2 and {i["reason"] for i in muted} == {"channel_muted"}
    window = api.get(
        "/v1/admin/users/u-eve/suppressions",
        params={
            "since": (start + timedelta(minutes=1)).isoformat(),
            "until": (start + timedelta(minutes=3)).isoformat(),
        },
        headers=headers,
    ).json()["items"]
    assert [datetime.fromisoformat(i["at"]) for i in window] == [
        start + timedelta(minutes=2),
        start + timedelta(minutes=1),
    ]
    bad = api.get("/v1/admin/users/u-eve/suppressions", params={"cursor": "nope"}, headers=headers)
    assert bad.status_code == 400
    nobody = api.get("/v1/admin/users/u-nobody/suppressions", headers=headers)
    assert nobody.status_code == 200 and nobody.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "path", ["/v1/admin/users/u-eve/suppressions", "/v1/admin/messages/m-1/suppressions"]
)
def test_the_log_is_for_admins_only(api, db_settings, path):
    assert api.get(path).status_code == 401
    assert api.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    # Not even a user's own log: it says who chose what, which is the admin's business.
    own = {"Authorization": f"Bearer {issue_user_token(db_settings, 'u-eve')}"}
    assert api.get(path, headers=own).status_code == 403


def test_rows_past_the_retention_are_deleted_in_batches(engine):
    now = datetime.now(UTC)
    old = [(f"u-{i}", "not_entitled", now - timedelta(days=31, minutes=i)) for i in range(7)]
    recent = [("u-new", "channel_muted", now - timedelta(days=29))]
    add(engine, *old, *recent)
    expired = REGISTRY.get_sample_value("notify_admin_suppressions_expired_total") or 0.0

    assert expire(engine, before=now - timedelta(days=30), batch=3) == 7  # 3 + 3 + 1
    assert count(engine) == 1
    assert (
        REGISTRY.get_sample_value("notify_admin_suppressions_expired_total") or 0
    ) - expired == 7
    assert expire(engine, before=now - timedelta(days=30), batch=3) == 0

    # The periodic task: a pass at start, then it waits for its interval or the stop.
    add(engine, ("u-late", "not_mentioned", now - timedelta(days=40)))
    task = Retention(engine, retention_days=30, interval_s=3600, batch=2)
    stop = threading.Event()
    thread = threading.Thread(target=task.run, args=(stop,))
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while count(engine) > 1 and datetime.now(UTC) < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    with engine.connect() as conn:
        assert conn.execute(select(SuppressionRow.user_id)).scalars().all() == ["u-new"]


def test_retention_is_a_setting(monkeypatch, database_url):
    monkeypatch.setenv("NOTIFY_SUPPRESSION_RETENTION_DAYS", "7")
    s = InboxSettings(database_url=database_url, jwt_secret="x" * 40)
    assert s.suppression_retention_days == 7
    monkeypatch.delenv("NOTIFY_SUPPRESSION_RETENTION_DAYS")
    assert (
        InboxSettings(database_url=database_url, jwt_secret="x" * 40).suppression_retention_days
        == 30
    )
