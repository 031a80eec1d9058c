"""User JWTs (HS256, algorithm fixed in code) and upstream service tokens."""

from __future__ import annotations

import argparse
import hmac
import sys
import time
from dataclasses import dataclass

import jwt

from notify_common.settings import UserAuthSettings, load

ALGORITHM = "HS256"  # fixed: a token's own "alg" header is never trusted
DEFAULT_TTL_S = 12 * 3600


class AuthError(Exception):
    """The credentials are missing or invalid (→ 401)."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def issue_user_token(
    settings: UserAuthSettings, user_id: str, *, admin: bool = False, ttl_s: int = DEFAULT_TTL_S
) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "roles": ["user", "admin"] if admin else ["user"],
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def verify_user_token(settings: UserAuthSettings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "exp", "iat"]},
            leeway=30,
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("invalid token: no subject")
    roles = claims.get("roles") or []
    if not isinstance(roles, list):
        raise AuthError("invalid token: roles must be a list")
    return Principal(user_id=sub, roles=frozenset(str(r) for r in roles))


def check_service_token(tokens: dict[str, str], presented: str) -> str | None:
    """The calling service's name, or None. Constant-time against every known token."""
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = name
    return found


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_main(argv: list[str] | None = None) -> int:
    """`notify-token USER_ID [--admin]`: print a user JWT signed with NOTIFY_JWT_SECRET."""
    parser = argparse.ArgumentParser(prog="notify-token", description=token_main.__doc__)
    parser.add_argument("user_id")
    parser.add_argument("--admin", action="store_true", help="include the admin role")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help="lifetime in seconds")
    args = parser.parse_args(argv)
    settings = load(UserAuthSettings)
    print(issue_user_token(settings, args.user_id, admin=args.admin, ttl_s=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(token_main())
