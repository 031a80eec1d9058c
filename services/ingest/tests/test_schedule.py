"""Scheduled announcements on the real broker and PostgreSQL: held until send_at, released
once (also with two replicas, and after a restart), cancellable before, 409 after."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from notify_common.testing.kafka import read_topic
from notify_ingest.app import build_app
from notify_ingest.ids import announcement_event_id
from notify_ingest.settings import IngestSettings
from notify_schemas import topics

pytestmark = pytest.mark.integration

TOKEN = "svc-token-sched"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(broker, prefix: str, database_url: str | None) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=prefix,
        service_tokens=f"upstream:{TOKEN}",
        database_url=database_url,
        ingest_schedule_poll_s=0.2,
    )


def announcement(aid: str, in_s: float) -> dict:
    send_at = datetime.now(UTC) + timedelta(seconds=in_s)
    return {
        "announcement_id": aid,
        "title": "Maintenance",
        "body": "tonight",
        "user_ids": ["u-1"],
        "send_at": send_at.isoformat(),
    }


def released(broker, prefix: str, expect: int, timeout: float = 20) -> list[str]:
    msgs = read_topic(
        broker.bootstrap,
        prefix + topics.ANNOUNCEMENT_REQUESTED,
        expect,
        timeout=timeout,
        settle=1.0,
    )
    return [json.loads(m.value())["announcement_id"] for m in msgs]


def test_held_until_send_at_then_released_once_with_its_event_id(
    broker, topic_prefix, database_url
):
    app = build_app(settings_for(broker, topic_prefix, database_url))
    with TestClient(app) as c:
        r = c.post("/v1/announcements", json=announcement("later-1", 3), headers=AUTH)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "scheduled" and r.json()["send_at"]
        assert r.json()["event_id"] == announcement_event_id("later-1")
        assert c.get("/v1/announcements/later-1", headers=AUTH).json()["state"] == "scheduled"
        # Not before its time.
        assert released(broker, topic_prefix, 1, timeout=1.5) == []
        assert released(broker, topic_prefix, 1, timeout=15) == ["later-1"]
        [msg] = read_topic(broker.bootstrap, topic_prefix + topics.ANNOUNCEMENT_REQUESTED, 1)
        assert dict(msg.headers())["ce_id"].decode() == announcement_event_id("later-1")
        state = c.get("/v1/announcements/later-1", headers=AUTH).json()
        assert state["state"] == "released" and state["released_at"]
        # Too late to cancel now.
        r = c.delete("/v1/announcements/later-1", headers=AUTH)
        assert r.status_code == 409, r.text
        # Posting it again changes nothing.
        again = c.post("/v1/announcements", json=announcement("later-1", 3), headers=AUTH)
        assert again.status_code == 202
        assert released(broker, topic_prefix, 2, timeout=3) == ["later-1"]


def test_cancelled_before_send_at_is_never_released(broker, topic_prefix, database_url):
    app = build_app(settings_for(broker, topic_prefix, database_url))
    with TestClient(app) as c:
        assert c.post("/v1/announcements", json=announcement("gone", 2), headers=AUTH).is_success
        first = c.delete("/v1/announcements/gone", headers=AUTH)
        assert first.status_code == 200 and first.json()["state"] == "cancelled"
        second = c.delete("/v1/announcements/gone", headers=AUTH)
        assert second.status_code == 200 and second.json()["state"] == "cancelled"
        assert c.delete("/v1/announcements/never-was", headers=AUTH).status_code == 404
        assert c.get("/v1/announcements/never-was", headers=AUTH).status_code == 404
        time.sleep(3)  # past its send_at, with the releaser running
        assert released(broker, topic_prefix, 1, timeout=2) == []


def test_survives_a_restart_and_two_replicas_release_each_once(broker, topic_prefix, database_url):
    settings = settings_for(broker, topic_prefix, database_url)
    # Scheduled on a replica that then stops before the time comes.
    with TestClient(build_app(settings)) as c:
        for i in range(20):
            r = c.post("/v1/announcements", json=announcement(f"r-{i}", 3), headers=AUTH)
            assert r.status_code == 202, r.text
    assert released(broker, topic_prefix, 1, timeout=1) == []
    # Two fresh replicas share the release.
    with TestClient(build_app(settings)) as a, TestClient(build_app(settings)) as b:
        ids = released(broker, topic_prefix, 20, timeout=20)
        assert sorted(ids) == sorted(f"r-{i}" for i in range(20))
        assert a.get("/v1/announcements/r-0", headers=AUTH).json()["state"] == "released"
        assert b.get("/v1/announcements/r-19", headers=AUTH).json()["state"] == "released"


def test_without_a_database_scheduling_is_refused_with_the_reason(broker, topic_prefix):
    with TestClient(build_app(settings_for(broker, topic_prefix, None))) as c:
        r = c.post("/v1/announcements", json=announcement("x", 60), headers=AUTH)
        assert r.status_code == 422
        assert "NOTIFY_DATABASE_URL" in r.json()["detail"]
        assert c.get("/v1/announcements/x", headers=AUTH).status_code == 404
        # Sending now still works.
        now = {**announcement("y", 0), "send_at": None}
        assert c.post("/v1/announcements", json=now, headers=AUTH).status_code == 202
