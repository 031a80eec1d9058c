"""Web Push subscriptions: the public key, saving (validation, SSRF policy, re-subscribe,
per-user cap), listing and deleting."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import text

from notify_common import webpush
from notify_inbox.app import build_app
from notify_inbox.settings import InboxSettings

pytestmark = pytest.mark.integration

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"
PUBLIC_IP = "142.250.74.10"  # only ever resolved to, never contacted


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_keys() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {"p256dh": b64(point), "auth": b64(os.urandom(16))}


def subscription(endpoint: str = "https://push.example.test/send/abc", **extra) -> dict:
    return {"endpoint": endpoint, "expirationTime": None, "keys": browser_keys(), **extra}


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the tests make up resolve as listed here; others through the real resolver."""
    table: dict[str, list[str]] = {
        "push.example.test": [PUBLIC_IP],
        "other-push.example.test": [PUBLIC_IP],
        "internal.example.test": ["10.1.2.3"],
        "sneaky.example.test": [PUBLIC_IP, "::ffff:192.168.0.9"],
    }
    real = webpush.resolve_host

    def resolve(host: str, port: int) -> list[str]:
        return table[host] if host in table else real(host, port)

    monkeypatch.setattr(webpush, "resolve_host", resolve)
    return table


@pytest.fixture
def public_key() -> str:
    return webpush.generate_vapid_private_key()[1]


@pytest.fixture
def push_settings(database_url: str, public_key: str) -> InboxSettings:
    return InboxSettings(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        inbox_consumer_enabled=False,
        inbox_relay_enabled=False,
        vapid_public_key=public_key,
        push_max_subscriptions_per_user=2,
    )


@pytest.fixture
def push_api(push_settings: InboxSettings, engine, fake_dns) -> Iterator[TestClient]:
    with TestClient(build_app(push_settings, engine=engine)) as client:
        yield client


def stored(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text("SELECT * FROM push_subscriptions")).mappings()]


def test_public_key_is_served_without_a_token_and_404_when_push_is_off(push_api, api, public_key):
    r = push_api.get("/v1/push/public-key")
    assert r.status_code == 200 and r.json() == {"public_key": public_key}
    assert "max-age" in r.headers["cache-control"]
    assert api.get("/v1/push/public-key").status_code == 404  # no NOTIFY_VAPID_PUBLIC_KEY


def test_an_invalid_public_key_setting_is_refused(database_url):
    with pytest.raises(ValueError, match="P-256"):
        InboxSettings(database_url=database_url, jwt_secret=JWT_SECRET, vapid_public_key="AAAA")


def test_subscribe_list_resubscribe_and_delete(push_api, auth, engine, public_key):
    body = subscription(device={"name": "Laptop", "platform": "Linux"})
    r = push_api.post("/v1/push/subscriptions", json=body, headers=auth("u-carol"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["origin"] == "https://push.example.test"
    assert created["device"] == {"name": "Laptop", "platform": "Linux"}
    assert created["is_active"] and created["failure_count"] == 0
    [row] = stored(engine)
    assert row["p256dh"] == body["keys"]["p256dh"] and row["application_server_key"] == public_key

    # The browser subscribes again (new keys): the same subscription is updated.
    again = subscription()
    r = push_api.post("/v1/push/subscriptions", json=again, headers=auth("u-carol"))
    assert r.status_code == 200 and r.json()["id"] == created["id"]
    [row] = stored(engine)
    assert row["p256dh"] == again["keys"]["p256dh"] and row["device_info"] is None

    listed = push_api.get("/v1/push/subscriptions", headers=auth("u-carol")).json()["items"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert push_api.get("/v1/push/subscriptions", headers=auth("u-dave")).json() == {"items": []}

    # Nobody else can delete it; its owner can.
    url = f"/v1/push/subscriptions/{created['id']}"
    assert push_api.delete(url, headers=auth("u-dave")).status_code == 404
    assert push_api.delete(url, headers=auth("u-carol")).status_code == 204
    assert push_api.delete(url, headers=auth("u-carol")).status_code == 404
    assert stored(engine) == []
    assert (
        push_api.delete("/v1/push/subscriptions/nope", headers=auth("u-carol")).status_code == 422
    )


def test_another_user_on_the_same_browser_takes_the_endpoint_over(push_api, auth, engine):
    body = subscription()
    first = push_api.post("/v1/push/subscriptions", json=body, headers=auth("u-carol")).json()
    r = push_api.post("/v1/push/subscriptions", json=subscription(), headers=auth("u-dave"))
    assert r.status_code == 201 and r.json()["id"] != first["id"]
    assert [row["user_id"] for row in stored(engine)] == ["u-dave"]
    assert push_api.get("/v1/push/subscriptions", headers=auth("u-carol")).json() == {"items": []}


def test_per_user_cap(push_api, auth):
    h = auth("u-carol")
    ids = []
    for i in range(2):
        r = push_api.post(
            "/v1/push/subscriptions", json=subscription(f"https://push.example.test/{i}"), headers=h
        )
        assert r.status_code == 201
        ids.append(r.json()["id"])
    r = push_api.post(
        "/v1/push/subscriptions", json=subscription("https://push.example.test/3"), headers=h
    )
    assert r.status_code == 409 and "at most 2" in r.json()["detail"]
    # Re-subscribing a stored endpoint is not a new subscription.
    r = push_api.post(
        "/v1/push/subscriptions", json=subscription("https://push.example.test/0"), headers=h
    )
    assert r.status_code == 200
    assert push_api.delete(f"/v1/push/subscriptions/{ids[1]}", headers=h).status_code == 204
    r = push_api.post(
        "/v1/push/subscriptions", json=subscription("https://push.example.test/3"), headers=h
    )
    assert r.status_code == 201


def _not_on_curve() -> str:
    # 0x04 || x || y with y chosen so that the point is not on P-256.
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return b64(b"\x04" + key.x.to_bytes(32, "big") + ((key.y + 1) % 2**256).to_bytes(32, "big"))


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda s: s["keys"].update(p256dh=_not_on_curve()), ["body", "keys", "p256dh"]),
        (lambda s: s["keys"].update(p256dh=b64(os.urandom(33))), ["body", "keys", "p256dh"]),
        (lambda s: s["keys"].update(p256dh="not base64!"), ["body", "keys", "p256dh"]),
        (lambda s: s["keys"].update(auth=b64(os.urandom(15))), ["body", "keys", "auth"]),
        (lambda s: s["keys"].update(auth=b64(os.urandom(17))), ["body", "keys", "auth"]),
        (lambda s: s.pop("keys"), ["body", "keys"]),
        (lambda s: s.update(extra=1), ["body", "extra"]),
        (
            lambda s: s.update(endpoint="https://push.example.test/" + "a" * 2100),
            ["body", "endpoint"],
        ),
        (lambda s: s.update(device={"name": "x" * 101}), ["body", "device", "name"]),
    ],
)
def test_invalid_subscriptions_are_refused_naming_the_field(push_api, auth, engine, mutate, loc):
    body = subscription()
    mutate(body)
    r = push_api.post("/v1/push/subscriptions", json=body, headers=auth("u-carol"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc
    assert stored(engine) == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1/push/x",
        "https://localhost/push/x",  # the real resolver: loopback
        "https://10.0.0.5/push/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/push/x",
        "https://[::ffff:10.0.0.1]/push/x",
        "https://internal.example.test/push/x",  # a name resolving to 10.1.2.3
        "https://sneaky.example.test/push/x",  # one public and one IPv4-mapped private address
        "http://push.example.test/push/x",  # not https
        "https://user:pw@push.example.test/push/x",
        "ftp://push.example.test/x",
    ],
)
def test_ssrf_endpoints_are_refused_at_save_time(push_api, auth, engine, endpoint):
    r = push_api.post("/v1/push/subscriptions", json=subscription(endpoint), headers=auth("u-eve"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "endpoint"]
    assert stored(engine) == []


def test_dev_hosts_and_the_allowlist(push_settings, engine, fake_dns, auth):
    # Off by default: nothing private gets through (the matrix above).
    assert push_settings.push_dev_hosts == "" and push_settings.push_allowed_hosts == ""
    relaxed = push_settings.model_copy(
        update={"push_dev_hosts": "127.0.0.1", "push_allowed_hosts": "push.example.test"}
    )
    with TestClient(build_app(relaxed, engine=engine)) as client:
        h = auth("u-dev")
        ok = client.post(
            "/v1/push/subscriptions", json=subscription("http://127.0.0.1:9999/push/t"), headers=h
        )
        assert ok.status_code == 201 and ok.json()["origin"] == "http://127.0.0.1:9999"
        assert (
            client.post(
                "/v1/push/subscriptions",
                json=subscription("https://other-push.example.test/x"),
                headers=h,
            ).status_code
            == 422
        )
        # Only the listed host is relaxed: another loopback address is still refused.
        assert (
            client.post(
                "/v1/push/subscriptions", json=subscription("http://127.0.0.2/push/t"), headers=h
            ).status_code
            == 422
        )


def test_subscriptions_need_a_user_token(push_api):
    assert push_api.post("/v1/push/subscriptions", json=subscription()).status_code == 401
    assert push_api.get("/v1/push/subscriptions").status_code == 401
