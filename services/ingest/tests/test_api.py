"""ingest's HTTP surface against the real broker: auth, validation, limits, publishing."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from notify_common.testing.infra import free_port
from notify_common.testing.kafka import read_topic
from notify_ingest.app import build_app
from notify_ingest.settings import IngestSettings
from notify_schemas import topics

pytestmark = pytest.mark.integration

TOKEN = "svc-token-full"
DIRECTORY_ONLY = "svc-token-directory"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MESSAGE = {
    "message_id": "m-1",
    "server_id": "s-1",
    "channel_id": "c-1",
    "sender_id": "u-1",
    "sender_name": "Alice",
    "content": "hello",
}


def settings_for(bootstrap: str, prefix: str, **kw) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        service_tokens=f"upstream:{TOKEN},directory-sync:{DIRECTORY_ONLY}:directory",
        **kw,
    )


@pytest.fixture
def client(broker, topic_prefix):
    app = build_app(settings_for(broker.bootstrap, topic_prefix, ingest_max_body_bytes=16384))
    with TestClient(app) as c:
        yield c


def test_message_is_published_with_cloudevents_headers_keyed_by_server(
    client, broker, topic_prefix
):
    r = client.post("/v1/messages", json=MESSAGE, headers={**AUTH, "X-Request-ID": "req-42"})
    assert r.status_code == 202, r.text
    [msg] = read_topic(broker.bootstrap, topic_prefix + topics.MESSAGE_CREATED, 1)
    assert msg.key() == b"s-1"
    headers = {k: v.decode() for k, v in msg.headers()}
    assert headers["ce_type"] == "io.notify.MessageCreated"
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == r.json()["event_id"]
    assert headers["ce_correlationid"] == "req-42"
    body = json.loads(msg.value())
    assert body["message_id"] == "m-1" and body["priority"] == "normal"
    assert body["created_at"]  # filled at receipt


def test_reposting_a_message_id_is_the_same_event(client):
    first = client.post("/v1/messages", json=MESSAGE, headers=AUTH).json()["event_id"]
    second = client.post("/v1/messages", json=MESSAGE, headers=AUTH).json()["event_id"]
    assert first == second


def test_directory_endpoints_publish_state_and_tombstones(client, broker, topic_prefix):
    assert (
        client.put(
            "/v1/users/u-7", json={"display_name": "Ann", "entitled": True}, headers=AUTH
        ).status_code
        == 202
    )
    assert client.delete("/v1/users/u-7", headers=AUTH).status_code == 202
    assert (
        client.put("/v1/servers/s-1/members/u-7", json={"role": "mod"}, headers=AUTH).status_code
        == 202
    )
    assert client.delete("/v1/servers/s-1/members/u-7", headers=AUTH).status_code == 202
    users = read_topic(broker.bootstrap, topic_prefix + topics.USERS, 2)
    assert [m.key() for m in users] == [b"u-7", b"u-7"]
    assert json.loads(users[0].value())["entitled"] is True
    assert users[1].value() is None
    members = read_topic(broker.bootstrap, topic_prefix + topics.MEMBERSHIPS, 2)
    assert [m.key() for m in members] == [b"s-1/u-7", b"s-1/u-7"]
    assert json.loads(members[0].value())["role"] == "mod"
    assert members[1].value() is None


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {DIRECTORY_ONLY}"}, 403),
    ],
)
def test_service_token_is_required_and_scoped(client, headers, status):
    r = client.post("/v1/messages", json=MESSAGE, headers=headers)
    assert r.status_code == status
    assert r.json()["detail"]


def test_directory_scope_may_write_users(client):
    r = client.put(
        "/v1/users/u-1",
        json={"display_name": "A"},
        headers={"Authorization": f"Bearer {DIRECTORY_ONLY}"},
    )
    assert r.status_code == 202


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in MESSAGE.items() if k != "sender_id"}, "sender_id"),
        ({**MESSAGE, "colour": "red"}, "colour"),  # unknown fields are refused
        ({**MESSAGE, "priority": "urgent"}, "priority"),
        ({**MESSAGE, "server_id": "a/b"}, "server_id"),
        ({**MESSAGE, "content": "x" * 9000}, "content"),
    ],
)
def test_invalid_events_get_422_naming_the_field(client, body, field):
    r = client.post("/v1/messages", json=body, headers=AUTH)
    assert r.status_code == 422
    assert field in json.dumps(r.json()["errors"])


def test_malformed_json_gets_400(client):
    r = client.post(
        "/v1/messages",
        content=b'{"message_id": ',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["detail"] == "malformed JSON body"


def test_oversized_body_gets_413(client):
    r = client.post("/v1/messages", json={**MESSAGE, "content": "x" * 20000}, headers=AUTH)
    assert r.status_code == 413


def test_announcement_needs_one_audience(client):
    base = {"title": "t", "body": "b"}
    assert client.post("/v1/announcements", json=base, headers=AUTH).status_code == 422
    r = client.post("/v1/announcements", json={**base, "server_id": "s-1"}, headers=AUTH)
    assert r.status_code == 202


def test_broker_down_gives_503_with_retry_after(topic_prefix):
    settings = settings_for(f"127.0.0.1:{free_port()}", topic_prefix, ingest_publish_timeout_s=1.0)
    with TestClient(build_app(settings)) as c:
        r = c.post("/v1/messages", json=MESSAGE, headers=AUTH)
        assert r.status_code == 503
        assert r.headers["Retry-After"]
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
