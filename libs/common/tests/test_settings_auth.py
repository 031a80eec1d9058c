"""Settings refuse to start without secrets; user JWTs verify only when they are exactly right."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from notify_common.auth import AuthError, issue_user_token, verify_user_token
from notify_common.settings import SettingsError, UserAuthSettings, load

SECRET = "test-secret-that-is-long-enough-for-hs256"
# Any public key will do: what matters is that it is public, so anyone can "sign" with it.
PUBLIC_KEY_PEM = """-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDL52zsK/GwidowXH7MMor0hicN
0vjEwCrmiHFPuwQrnwbYrwz/OP48yRx2aqexbZQBZunj/5TLfbl6EHBnES/h9/vI
O4XBI4uKxQxJPFUlKMMi0uC2xfSTPyRZASBH9XZzH1wPeK4uYRlpbhg3D0TrMdOF
PzxyS9zuuABLd4xVPwIDAQAB
-----END PUBLIC KEY-----
"""


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> UserAuthSettings:
    for name in list(os.environ):
        if name.upper().startswith("NOTIFY_"):
            monkeypatch.delenv(name)
    return UserAuthSettings(jwt_secret=SecretStr(SECRET))


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": "u-alice",
        "roles": ["user"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "aud": "notify",
        "iss": "notify",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(payload: dict[str, object], header: dict[str, str], key: bytes | None) -> str:
    """Build a JWT without PyJWT's safety checks, as an attacker would."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


# --- settings -------------------------------------------------------------------------------


def test_load_without_jwt_secret_exits_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("NOTIFY_"):
            monkeypatch.delenv(name)

    with pytest.raises(SettingsError) as info:
        load(UserAuthSettings)

    assert isinstance(info.value, SystemExit)
    assert "NOTIFY_JWT_SECRET" in str(info.value.code)
    assert "NOTIFY_JWT_SECRET" in capsys.readouterr().err


def test_load_reads_the_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_JWT_SECRET", SECRET)
    monkeypatch.setenv("NOTIFY_KAFKA_SESSION_TIMEOUT_MS", "6000")

    settings = load(UserAuthSettings)

    assert settings.jwt_secret.get_secret_value() == SECRET
    assert settings.kafka_session_timeout_ms == 6000
    assert SECRET not in repr(settings)  # a secret never shows up in a log of the settings


def test_load_names_an_invalid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_JWT_SECRET", SECRET)
    monkeypatch.setenv("NOTIFY_KAFKA_SESSION_TIMEOUT_MS", "soon")

    with pytest.raises(SettingsError, match="NOTIFY_KAFKA_SESSION_TIMEOUT_MS is invalid"):
        load(UserAuthSettings)


# --- user tokens ----------------------------------------------------------------------------


def test_issued_token_round_trips(settings: UserAuthSettings) -> None:
    user = verify_user_token(settings, issue_user_token(settings, "u-alice"))
    admin = verify_user_token(settings, issue_user_token(settings, "u-root", admin=True))

    assert (user.user_id, user.is_admin) == ("u-alice", False)
    assert (admin.user_id, admin.is_admin) == ("u-root", True)


def test_a_well_formed_token_is_accepted(settings: UserAuthSettings) -> None:
    # The baseline the rejections below differ from in exactly one respect.
    assert verify_user_token(settings, sign(claims())).user_id == "u-alice"


@pytest.mark.parametrize(
    "token_factory",
    [
        pytest.param(lambda: sign(claims(exp=int(time.time()) - 120)), id="expired"),
        pytest.param(
            lambda: sign(claims(nbf=int(time.time()) + 300, exp=int(time.time()) + 900)),
            id="not-yet-valid",
        ),
        pytest.param(lambda: sign(claims(aud="someone-else")), id="wrong-audience"),
        pytest.param(lambda: sign(claims(iss="evil")), id="wrong-issuer"),
        pytest.param(lambda: sign(claims(sub=None)), id="missing-sub"),
        pytest.param(lambda: sign(claims(sub="")), id="empty-sub"),
        pytest.param(
            lambda: sign(claims(), key="another-secret-of-sufficient-length"), id="other-secret"
        ),
        pytest.param(
            lambda: hand_signed(claims(), {"alg": "none", "typ": "JWT"}, None), id="alg-none"
        ),
        pytest.param(
            lambda: hand_signed(claims(sub="u-root", roles=["admin"]), {"alg": "none"}, None),
            id="alg-none-admin",
        ),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
    ],
)
def test_invalid_tokens_are_rejected(settings: UserAuthSettings, token_factory) -> None:
    with pytest.raises(AuthError):
        verify_user_token(settings, token_factory())


def test_tampered_payload_is_rejected(settings: UserAuthSettings) -> None:
    header, _payload, signature = sign(claims()).split(".")
    forged = _b64(json.dumps(claims(sub="u-root", roles=["user", "admin"])).encode())

    with pytest.raises(AuthError):
        verify_user_token(settings, f"{header}.{forged}.{signature}")


def test_tampered_signature_is_rejected(settings: UserAuthSettings) -> None:
    header, payload, signature = sign(claims()).split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    with pytest.raises(AuthError):
        verify_user_token(settings, f"{header}.{payload}.{flipped}")


def test_nbf_within_leeway_is_accepted(settings: UserAuthSettings) -> None:
    # Clock skew between hosts of a few seconds must not lock users out.
    token = sign(claims(nbf=int(time.time()) + 5))
    assert verify_user_token(settings, token).user_id == "u-alice"


def test_hs256_token_signed_with_a_public_key_is_rejected() -> None:
    # Key confusion: were the configured secret a public key (e.g. left over from RS256), anyone
    # could HMAC-sign tokens with it. The verifier must refuse to use it as an HMAC secret.
    settings = UserAuthSettings(jwt_secret=SecretStr(PUBLIC_KEY_PEM))
    forged = hand_signed(
        claims(sub="u-root", roles=["user", "admin"]),
        {"alg": "HS256", "typ": "JWT"},
        PUBLIC_KEY_PEM.encode(),
    )

    with pytest.raises(AuthError):
        verify_user_token(settings, forged)


def test_hs256_token_signed_with_a_public_key_is_rejected_by_a_normal_secret(
    settings: UserAuthSettings,
) -> None:
    forged = hand_signed(claims(), {"alg": "HS256", "typ": "JWT"}, PUBLIC_KEY_PEM.encode())

    with pytest.raises(AuthError):
        verify_user_token(settings, forged)


def test_roles_must_be_a_list(settings: UserAuthSettings) -> None:
    # A string "admin" must not be read character by character or as a role.
    with pytest.raises(AuthError):
        verify_user_token(settings, sign(claims(roles="admin")))


# --- notify-token console script ------------------------------------------------------------


def _script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def test_notify_token_prints_a_verifiable_admin_token(settings: UserAuthSettings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}
    env["NOTIFY_JWT_SECRET"] = SECRET

    result = subprocess.run(
        [_script("notify-token"), "u1", "--admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    principal = verify_user_token(settings, result.stdout.strip())
    assert principal.user_id == "u1"
    assert principal.is_admin


def test_notify_token_without_secret_fails_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}

    result = subprocess.run(
        [_script("notify-token"), "u1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert result.stdout.strip() == ""
    assert "NOTIFY_JWT_SECRET" in result.stderr
