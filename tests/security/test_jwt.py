"""User JWTs against the real inbox app: every forged, stale or misaddressed token is a 401,
the algorithm is fixed in code, and admin endpoints refuse users with 403."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from notify_common import auth as auth_module
from notify_common.settings import UserAuthSettings

from .conftest import JWT_SECRET

pytestmark = pytest.mark.integration

PATH = "/v1/notifications/unread-count"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
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


def hs256(payload: dict[str, Any], secret: bytes = JWT_SECRET.encode(), alg: str = "HS256") -> str:
    """A JWS built by hand, so nothing in a library stops a forgery from being made."""
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret, f"{header}.{body}".encode(), digest).digest()
    return f"{header}.{body}.{b64(signature)}"


def get(client: TestClient, token: str):
    return client.get(PATH, headers={"Authorization": f"Bearer {token}"})


def test_a_valid_token_is_accepted(inbox: TestClient) -> None:
    # The control: the forgeries below differ from this one in one respect each.
    assert get(inbox, hs256(claims())).json() == {"unread": 0}


def _unsigned() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tampered_signature() -> str:
    header, body, signature = hs256(claims()).split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return f"{header}.{body}.{flipped}"


def _tampered_payload() -> str:
    header, _body, signature = hs256(claims()).split(".")
    other = b64(json.dumps(claims(sub="u-bob")).encode())
    return f"{header}.{other}.{signature}"


FORGERIES: dict[str, Callable[[], str]] = {
    "alg none, unsigned": _unsigned,
    "alg none, signature kept": lambda: _unsigned() + hs256(claims()).split(".")[2],
    # The classic key confusion: HS256 with the (public) RSA key as the HMAC secret.
    "HS256 keyed with a public key": lambda: hs256(claims(), secret=_public_pem(_rsa_key())),
    "RS256 with an unknown key": lambda: jwt.encode(claims(), _rsa_key(), algorithm="RS256"),
    # The right secret with another HMAC: the header's alg is not trusted.
    "HS512 with the right secret": lambda: hs256(claims(), alg="HS512"),
    "signed with another secret": lambda: hs256(claims(), secret=b"x" * 40),
    "expired": lambda: hs256(claims(exp=int(time.time()) - 120)),
    "not yet valid": lambda: hs256(claims(nbf=int(time.time()) + 3600)),
    "wrong audience": lambda: hs256(claims(aud="someone-else")),
    "no audience": lambda: hs256(claims(aud=None)),
    "wrong issuer": lambda: hs256(claims(iss="evil")),
    "no issuer": lambda: hs256(claims(iss=None)),
    "tampered signature": _tampered_signature,
    "tampered payload": _tampered_payload,
    "missing sub": lambda: hs256(claims(sub=None)),
    "empty sub": lambda: hs256(claims(sub="")),
    "numeric sub": lambda: hs256(claims(sub=42)),
    "missing exp": lambda: hs256(claims(exp=None)),
    "missing iat": lambda: hs256(claims(iat=None)),
    "roles not a list": lambda: hs256(claims(roles="admin")),
    "not a JWT": lambda: "not.a.jwt",
    "two parts": lambda: ".".join(hs256(claims()).split(".")[:2]),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_bad_token_is_unauthorized(inbox: TestClient, name: str) -> None:
    resp = get(inbox, FORGERIES[name]())
    assert resp.status_code == 401, (name, resp.text)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_the_algorithm_is_fixed_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = jwt.decode

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("algorithms"))
        return real(*args, **kwargs)

    monkeypatch.setattr(auth_module.jwt, "decode", spy)
    settings = UserAuthSettings(jwt_secret=JWT_SECRET)
    for alg in ("HS256", "HS512"):
        token = hs256(claims(), alg=alg)
        try:
            auth_module.verify_user_token(settings, token)
        except auth_module.AuthError:
            assert alg == "HS512"
    # The list comes from the code, whatever the token's header said.
    assert seen == [["HS256"], ["HS256"]]


def _admin_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every /v1/admin operation the app documents."""
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path)
        for path, operations in sorted(paths.items())
        if path.startswith("/v1/admin")
        for method in sorted(operations)
    ]


def test_admin_endpoints_refuse_users_with_403(inbox: TestClient, auth) -> None:
    routes = _admin_routes(inbox)
    if not routes:
        pytest.skip("the inbox has no /v1/admin endpoints yet")
    for method, template in routes:
        path = _fill(template)
        user = inbox.request(method, path, headers=auth("u-alice"))
        assert user.status_code == 403, (method, path, user.text)
        anonymous = inbox.request(method, path)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        admin = inbox.request(method, path, headers=auth("u-root", admin=True))
        assert admin.status_code not in (401, 403), (method, path, admin.text)


def _fill(template: str) -> str:
    out = []
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append("1")
        else:
            out.append(part)
    return "/".join(out)
