"""VAPID (RFC 8292): the application server's keys and the JWTs that identify it.

A JWT is signed once per push service origin and key and reused until less than a tenth of
its lifetime remains: an ES256 signature costs about as much as a push's encryption, and
push services accept the same token for every subscription on their origin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from notify_common.webpush import load_vapid_private_key, public_key_b64


@dataclass(frozen=True)
class VapidKey:
    private: ec.EllipticCurvePrivateKey
    public_b64: str

    @classmethod
    def load(cls, value: str) -> VapidKey:
        private = load_vapid_private_key(value)
        return cls(private=private, public_b64=public_key_b64(private.public_key()))

    def __repr__(self) -> str:  # never print key material, whatever logs it
        return f"VapidKey(public={self.public_b64[:12]}…)"


class VapidKeys:
    """The current key plus the previous ones of a rotation, by public key."""

    def __init__(self, current: VapidKey, previous: list[VapidKey] | None = None) -> None:
        self.current = current
        self._by_public = {k.public_b64: k for k in [*(previous or []), current]}

    @classmethod
    def from_settings(cls, private_key: str, previous: str = "") -> VapidKeys:
        return cls(
            VapidKey.load(private_key),
            [VapidKey.load(p) for p in previous.split(",") if p.strip()],
        )

    def for_subscription(self, application_server_key: str | None) -> VapidKey | None:
        """The key a subscription was made with; None when that key was retired (the
        subscription can never be pushed to again). Unknown (legacy rows): the current one."""
        if not application_server_key:
            return self.current
        return self._by_public.get(application_server_key)


class VapidSigner:
    """Authorization header values, cached per (origin, key)."""

    def __init__(self, subject: str, *, ttl_s: int = 12 * 3600) -> None:
        self.subject = subject
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}
        self.signed = 0  # how many JWTs were signed (tests check the caching)

    def authorization(self, origin: str, key: VapidKey, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        cache_key = (origin, key.public_b64)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] - now > self.ttl_s / 10:
            return cached[1]
        exp = int(now) + self.ttl_s
        token = jwt.encode(
            {"aud": origin, "exp": exp, "sub": self.subject},
            key.private,
            algorithm="ES256",
            headers={"typ": "JWT"},
        )
        value = f"vapid t={token}, k={key.public_b64}"
        self._cache[cache_key] = (float(exp), value)
        self.signed += 1
        return value
