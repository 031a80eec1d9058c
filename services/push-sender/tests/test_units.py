"""Encryption, VAPID, the endpoint policy, the response table and the settings (no servers)."""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import http_ece
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notify_common.settings import SettingsError
from notify_common.webpush import (
    EndpointPolicy,
    EndpointRejected,
    b64url_encode,
    generate_vapid_private_key,
    is_public_address,
)
from notify_push_sender import crypto, store
from notify_push_sender.dispatcher import Response, backoff, classify, retry_after_s
from notify_push_sender.events import delivery
from notify_push_sender.main import vapid_generate
from notify_push_sender.settings import PushSenderSettings
from notify_push_sender.testing import PushReceiver
from notify_push_sender.vapid import VapidKey, VapidKeys, VapidSigner
from notify_schemas.models import DeliveryRecorded

# --- encryption ------------------------------------------------------------------------


def test_encrypted_body_decrypts_with_http_ece_and_uses_a_fresh_key_each_time():
    receiver = PushReceiver()  # not started: only its subscriber keys are used
    sub = receiver.subscribe("t")
    plain = orjson.dumps({"title": "hello", "body": "ü" * 1000})
    keys = sub.subscription()["keys"]
    one = crypto.encrypt(plain, p256dh=keys["p256dh"], auth=keys["auth"])
    two = crypto.encrypt(plain, p256dh=keys["p256dh"], auth=keys["auth"])
    for body in (one, two):
        assert (
            http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
            == plain
        )
    # RFC 8291: a new application server key (the key id, bytes 21..86) and salt per message.
    assert one[21:86] != two[21:86] and one[:16] != two[:16]
    assert int.from_bytes(one[16:20], "big") == 4096 and one[20] == 65


def test_a_full_record_fits_and_one_byte_more_is_refused():
    sub = PushReceiver().subscribe("t")
    keys = sub.subscription()["keys"]
    body = crypto.encrypt(b"x" * 3993, p256dh=keys["p256dh"], auth=keys["auth"])
    assert len(body) == 4096  # exactly one record: what push services accept at most
    with pytest.raises(ValueError):
        crypto.encrypt(b"x" * 3994, p256dh=keys["p256dh"], auth=keys["auth"])


# --- VAPID ------------------------------------------------------------------------------


def test_vapid_jwt_is_signed_once_per_origin_and_verifies():
    private, public = generate_vapid_private_key()
    key = VapidKey.load(private)
    assert key.public_b64 == public
    signer = VapidSigner("mailto:ops@example.test", ttl_s=12 * 3600)
    now = time.time()
    a = signer.authorization("https://fcm.googleapis.com", key, now=now)
    assert signer.authorization("https://fcm.googleapis.com", key, now=now + 3600) == a
    b = signer.authorization("https://updates.push.services.mozilla.com", key, now=now)
    assert signer.signed == 2 and a != b
    token = a.split("t=", 1)[1].split(",", 1)[0]
    assert a.endswith(f"k={public}")
    claims = jwt.decode(
        token,
        key.private.public_key(),
        algorithms=["ES256"],
        audience="https://fcm.googleapis.com",
    )
    assert claims["sub"] == "mailto:ops@example.test"
    assert now + 12 * 3600 - 5 <= claims["exp"] <= now + 12 * 3600 + 1
    # Signed again before it gets close to expiry (less than a tenth of its life left).
    later = signer.authorization("https://fcm.googleapis.com", key, now=now + 11 * 3600)
    assert later != a and signer.signed == 3


def test_rotation_signs_with_the_key_a_subscription_was_made_with():
    old_private, old_public = generate_vapid_private_key()
    new_private, new_public = generate_vapid_private_key()
    keys = VapidKeys.from_settings(new_private, old_private)
    assert keys.for_subscription(old_public).public_b64 == old_public
    assert keys.for_subscription(new_public).public_b64 == new_public
    assert keys.for_subscription(None).public_b64 == new_public
    retired = generate_vapid_private_key()[1]
    assert keys.for_subscription(retired) is None
    assert old_private not in repr(keys.current)


# --- the endpoint policy --------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "::",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "142.250.74.10", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address):
    assert is_public_address(ipaddress.ip_address(address))


def test_policy_static_checks_and_allowlist():
    policy = EndpointPolicy.from_settings(
        allowed_hosts="fcm.googleapis.com,*.notify.windows.com", dev_hosts=""
    )
    assert policy.check_url("https://fcm.googleapis.com/fcm/send/x")[0] == (
        "https://fcm.googleapis.com"
    )
    assert policy.check_url("https://wns2-par02p.notify.windows.com/w/?token=1")[0] == (
        "https://wns2-par02p.notify.windows.com"
    )
    for url, why in [
        ("https://evil.example.com/push", "allowed"),
        ("http://fcm.googleapis.com/x", "https"),
        ("https://user:pw@fcm.googleapis.com/x", "credentials"),
        ("https://8.8.8.8/x", "IP address"),
        ("https:///x", "host"),
        ("https://fcm.googleapis.com/" + "a" * 2100, "longer"),
    ]:
        with pytest.raises(EndpointRejected, match=why):
            policy.check_url(url)


def test_dev_hosts_admit_private_http_only_for_the_listed_host():
    policy = EndpointPolicy.from_settings(allowed_hosts="", dev_hosts="127.0.0.1")
    assert policy.check_endpoint("http://127.0.0.1:8080/push/a") == "http://127.0.0.1:8080"
    assert policy.address_allowed("127.0.0.1") and not policy.address_allowed("127.0.0.2")
    with pytest.raises(EndpointRejected):
        policy.check_url("http://localhost:8080/push/a")


def test_names_are_checked_on_every_address_they_resolve_to():
    policy = EndpointPolicy()
    public = lambda _h, _p: ["142.250.74.10"]  # noqa: E731
    mixed = lambda _h, _p: ["142.250.74.10", "10.0.0.7"]  # noqa: E731
    assert policy.check_endpoint("https://push.example.test/x", resolve=public)
    with pytest.raises(EndpointRejected, match="private"):
        policy.check_endpoint("https://push.example.test/x", resolve=mixed)

    def nowhere(_h: str, _p: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(EndpointRejected, match="resolve"):
        policy.check_endpoint("https://push.example.test/x", resolve=nowhere)


# --- the response table -----------------------------------------------------------------


def job(attempt: int = 1) -> store.Job:
    return store.Job(
        id=1,
        notification_id=uuid.uuid4(),
        user_id="u",
        subscription_id=uuid.uuid4(),
        attempt=attempt,
        origin="https://push.example.test",
        payload=b"{}",
        ttl_s=60,
        urgency="normal",
        topic=None,
        expires_at=datetime.now(UTC) + timedelta(minutes=1),
        endpoint="https://push.example.test/x",
        p256dh="",
        auth="",
        application_server_key=None,
        usable=True,
    )


@pytest.fixture
def settings(monkeypatch):
    private, _ = generate_vapid_private_key()
    monkeypatch.setenv("NOTIFY_VAPID_PRIVATE_KEY", private)
    return PushSenderSettings(
        database_url="postgresql://unused",
        vapid_subject="mailto:ops@example.test",
        push_max_attempts=3,
        push_retry_base_s=1,
        push_retry_cap_s=8,
    )


NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "state", "outcome", "subscription"),
    [
        (201, "sent", "sent", "ok"),
        (204, "sent", "sent", "ok"),
        (404, "gone", "deactivated", "gone"),
        (410, "gone", "deactivated", "gone"),
        (413, "failed", "failed", None),
        (401, "failed", "failed", None),
        (403, "failed", "failed", None),
        (400, "failed", "failed", "failed"),
        (301, "failed", "failed", "failed"),
        (500, "queued", "deferred", None),
        (503, "queued", "deferred", None),
    ],
)
def test_each_status_has_its_outcome(settings, status, state, outcome, subscription):
    o = classify(job(), Response(status), settings, NOW)
    assert (o.state, o.outcome, o.subscription) == (state, outcome, subscription)
    assert o.status_class == f"{status // 100}xx"


def test_429_waits_at_least_retry_after_in_seconds_or_as_a_date(settings):
    o = classify(job(), Response(429, retry_after="30"), settings, NOW)
    assert o.state == "queued" and o.not_before == NOW + timedelta(seconds=30)
    date = "Sun, 22 Nov 2026 09:02:00 GMT"
    assert retry_after_s(date, NOW) == 120
    o = classify(job(), Response(429, retry_after=date), settings, NOW)
    assert o.not_before == NOW + timedelta(seconds=120)
    o = classify(job(), Response(429), settings, NOW)  # no header: the backoff
    assert o.not_before is not None and NOW < o.not_before <= NOW + timedelta(seconds=1)


def test_timeouts_and_connection_errors_retry_then_dead_letter(settings):
    for error in ("timeout", "connection"):
        o = classify(job(1), Response(None, error), settings, NOW)
        assert o.state == "queued" and o.status_class == error
        last = classify(job(3), Response(None, error), settings, NOW)
        assert last.state == "dead" and last.outcome == "failed"
        assert "dead-lettered" in last.reason
    blocked = classify(job(), Response(None, "blocked"), settings, NOW)
    assert (blocked.state, blocked.subscription) == ("failed", "failed")


def test_backoff_grows_capped_with_jitter():
    delays = [backoff(a, base=1, cap=8) for a in range(1, 8)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4
    assert all(4 <= d <= 8 for d in delays[3:])
    assert len({backoff(3, base=1, cap=8) for _ in range(20)}) > 1


def test_delivery_event_matches_the_contract():
    value = delivery(
        notification_id=uuid.uuid4(),
        user_id="u",
        subscription_id=uuid.uuid4(),
        outcome="deactivated",
        reason="x" * 900,
        attempt=2,
        at=NOW,
    )
    event = DeliveryRecorded.model_validate_json(value)
    assert event.channel == "push" and event.reason is not None and len(event.reason) == 500


# --- settings and the command line -----------------------------------------------------


def test_vapid_generate_prints_a_usable_pair():
    out = vapid_generate("mailto:ops@example.test")
    values = dict(
        line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#")
    )
    key = VapidKey.load(values["NOTIFY_VAPID_PRIVATE_KEY"])
    assert key.public_b64 == values["NOTIFY_VAPID_PUBLIC_KEY"]
    assert values["NOTIFY_VAPID_SUBJECT"] == "mailto:ops@example.test"
    cli = subprocess.run(
        [sys.executable, "-m", "notify_push_sender.main", "vapid", "generate"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "NOTIFY_VAPID_PRIVATE_KEY=" in cli.stdout


def _refusal(monkeypatch, **env: str) -> str:
    for name in ("NOTIFY_VAPID_PRIVATE_KEY", "NOTIFY_VAPID_PUBLIC_KEY", "NOTIFY_VAPID_SUBJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTIFY_DATABASE_URL", "postgresql://unused")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from notify_common.settings import load

    with pytest.raises(SettingsError) as refused:
        load(PushSenderSettings)
    return str(refused.value)


def test_missing_or_invalid_keys_refuse_to_start_without_showing_the_key(monkeypatch, capsys):
    assert "NOTIFY_VAPID_PRIVATE_KEY is required" in _refusal(
        monkeypatch, NOTIFY_VAPID_SUBJECT="mailto:a@b.c"
    )
    not_a_key = "c2VjcmV0LWJ1dC1ub3QtYS1rZXk"
    message = _refusal(
        monkeypatch, NOTIFY_VAPID_PRIVATE_KEY=not_a_key, NOTIFY_VAPID_SUBJECT="mailto:a@b.c"
    )
    assert "NOTIFY_VAPID_PRIVATE_KEY is invalid" in message and not_a_key not in message
    # A scalar outside the curve's order is not a key either.
    too_big = b64url_encode(b"\xff" * 32)
    message = _refusal(
        monkeypatch, NOTIFY_VAPID_PRIVATE_KEY=too_big, NOTIFY_VAPID_SUBJECT="mailto:a@b.c"
    )
    assert "NOTIFY_VAPID_PRIVATE_KEY is invalid" in message and too_big not in message
    private, _ = generate_vapid_private_key()
    _, other_public = generate_vapid_private_key()
    message = _refusal(
        monkeypatch,
        NOTIFY_VAPID_PRIVATE_KEY=private,
        NOTIFY_VAPID_PUBLIC_KEY=other_public,
        NOTIFY_VAPID_SUBJECT="mailto:a@b.c",
    )
    assert "NOTIFY_VAPID_PUBLIC_KEY is invalid" in message and private not in message
    message = _refusal(monkeypatch, NOTIFY_VAPID_PRIVATE_KEY=private, NOTIFY_VAPID_SUBJECT="ops")
    assert "NOTIFY_VAPID_SUBJECT is invalid" in message and private not in message
    assert private not in capsys.readouterr().err


def test_pem_keys_are_accepted():
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert VapidKey.load(pem).private.private_numbers() == key.private_numbers()


def test_the_service_process_refuses_to_start_without_a_usable_key():
    import os

    from notify_common.testing.processes import script

    not_a_key = b64url_encode(b"\x00" * 32)  # zero is not a valid scalar
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")},
        "NOTIFY_DATABASE_URL": "postgresql://unused",
        "NOTIFY_VAPID_PRIVATE_KEY": not_a_key,
        "NOTIFY_VAPID_SUBJECT": "mailto:ops@example.test",
    }
    run = subprocess.run(
        [script("notify-push-sender")], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "NOTIFY_VAPID_PRIVATE_KEY is invalid" in run.stderr
    assert not_a_key not in run.stderr + run.stdout
    del env["NOTIFY_VAPID_PRIVATE_KEY"]
    run = subprocess.run(
        [script("notify-push-sender")], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "NOTIFY_VAPID_PRIVATE_KEY is required" in run.stderr


def test_handed_over_priority_pushes_start_before_waiting_bulk_ones(settings):
    """The priority lane (docs/decisions/0010-priority-lanes.md): pushes the consumers hand
    over with urgency high go to the front of the dispatcher's ready queue."""
    from notify_push_sender.dispatcher import Dispatcher

    dispatcher = Dispatcher(
        settings=settings,
        engine=None,  # type: ignore[arg-type]  # _accept touches no database
        publisher=None,  # type: ignore[arg-type]
        keys=None,  # type: ignore[arg-type]
        policy=None,  # type: ignore[arg-type]
    )

    def make(i: int, urgency: str) -> store.Job:
        return dataclasses.replace(job(), id=i, urgency=urgency)

    dispatcher._accept([make(1, "low"), make(2, "low")])
    dispatcher._accept([make(3, "low"), make(4, "high"), make(5, "high")])
    assert [j.id for j in dispatcher._ready] == [4, 5, 1, 2, 3]
    assert dispatcher._in_flight["https://push.example.test"] == 5
