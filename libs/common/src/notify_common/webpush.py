"""Web Push pieces that the inbox (subscriptions) and push-sender (delivery) share: key
encodings, VAPID key loading, and the endpoint policy that keeps the sender away from the
internal network (SSRF).

The endpoint policy is applied twice: when a subscription is saved (the inbox resolves the
host and refuses non-public addresses) and again by push-sender for every connection it
opens, on the address actually connected to, because DNS may answer differently later.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, SecretStr, field_validator

from notify_common.settings import CommonSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 8291: the user agent's key is an uncompressed P-256 point, its auth secret 16 bytes.
P256DH_BYTES = 65
AUTH_BYTES = 16
MAX_ENDPOINT_CHARS = 2048


class InvalidKey(ValueError):
    """A key that cannot be used (the message never contains the key itself)."""


def b64url_decode(value: str) -> bytes:
    """Base64url with or without padding (browsers send it unpadded); nothing else."""
    text = value.strip()
    if not text or any(c in text for c in "+/ \n\r\t"):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_p256_point(value: str) -> ec.EllipticCurvePublicKey:
    """A subscription's p256dh (or a VAPID public key): an uncompressed point on P-256."""
    raw = b64url_decode(value)
    if len(raw) != P256DH_BYTES or raw[0] != 0x04:
        raise ValueError(f"must be an uncompressed P-256 point ({P256DH_BYTES} bytes)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("is not a point on the P-256 curve") from None


def parse_auth_secret(value: str) -> bytes:
    raw = b64url_decode(value)
    if len(raw) != AUTH_BYTES:
        raise ValueError(f"must be {AUTH_BYTES} bytes")
    return raw


def public_key_b64(key: ec.EllipticCurvePublicKey) -> str:
    """The application server key as PushManager.subscribe takes it (base64url, 65 bytes)."""
    return b64url_encode(
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )


def load_vapid_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A VAPID private key: the raw 32-byte scalar in base64url (what `notify-push-sender
    vapid generate` and the usual web-push tools print) or a PEM (PKCS#8 or SEC1).

    Raises InvalidKey with a message that never quotes the key.
    """
    text = value.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidKey("is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise InvalidKey("must be a P-256 (prime256v1) key")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError:
        raise InvalidKey("must be base64url (32 bytes) or a PEM key") from None
    if len(raw) != 32:
        raise InvalidKey("must decode to 32 bytes (a P-256 private scalar)")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError:
        raise InvalidKey("is not a valid P-256 private scalar") from None


def generate_vapid_private_key() -> tuple[str, str]:
    """A fresh key pair: (private scalar base64url, public key base64url)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url_encode(private), public_key_b64(key.public_key())


# --- the endpoint policy (SSRF) --------------------------------------------------------

# Ranges that `is_global` may call global but that must never be a push service: multicast
# (some of it is "global") and the IPv6 forms that embed an IPv4 address, checked through the
# embedded address instead (NAT64 64:ff9b::/96 reaches the embedded IPv4 via the network's
# translator; 6to4 2002::/16 via a relay).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses.

    Refused: private (RFC 1918, ULA), loopback, link-local (169.254/16 incl. cloud metadata,
    fe80::/10), CGNAT (100.64/10), multicast, unspecified, reserved and documentation
    ranges, and IPv6 addresses embedding any of those (IPv4-mapped, NAT64, 6to4).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public_address(inner)
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
        and not ip.is_loopback
        and not ip.is_link_local
    )


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address the host resolves to (the inbox's save-time check; tests replace it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EndpointRejected(ValueError):
    """The endpoint may not be used; the message says why (safe to show to the user)."""


def _split_hosts(raw: str) -> frozenset[str]:
    return frozenset(h.strip().lower().strip("[]") for h in raw.split(",") if h.strip())


@dataclass(frozen=True)
class EndpointPolicy:
    """Which push endpoints may be used.

    * https only, a DNS name (an IP literal is never a push service), no credentials in the
      URL, at most MAX_ENDPOINT_CHARS;
    * every address the name resolves to must be public (`is_public_address`);
    * `allowed_hosts`, when not empty: the host must equal an entry or, for an entry
      "*.example.com", end with ".example.com";
    * `dev_hosts` (tests and local development only, empty by default): hosts admitted
      although they are IP literals or private, and over plain http. Listing a host here
      is the only way to relax the checks.
    """

    allowed_hosts: frozenset[str] = frozenset()
    dev_hosts: frozenset[str] = frozenset()
    # Addresses the dev hosts stand for: the connect-time guard sees only addresses.
    dev_addresses: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(
        cls, *, allowed_hosts: str, dev_hosts: str, resolve: bool = False
    ) -> EndpointPolicy:
        dev = _split_hosts(dev_hosts)
        addresses: set[str] = set()
        for host in dev:
            ip = parse_ip(host)
            if ip is not None:
                addresses.add(str(ip))
            elif resolve:
                # A dev host that does not resolve simply admits nothing.
                with contextlib.suppress(OSError):
                    addresses.update(str(parse_ip(a)) for a in resolve_host(host, 443))
        return cls(
            allowed_hosts=_split_hosts(allowed_hosts),
            dev_hosts=dev,
            dev_addresses=frozenset(addresses),
        )

    def host_allowed(self, host: str) -> bool:
        if not self.allowed_hosts or host in self.dev_hosts:
            return True
        for entry in self.allowed_hosts:
            if entry.startswith("*."):
                if host.endswith(entry[1:]):
                    return True
            elif host == entry:
                return True
        return False

    def check_url(self, url: str) -> tuple[str, str, int]:
        """Static checks (no DNS): returns (origin, host, port) or raises EndpointRejected."""
        if len(url) > MAX_ENDPOINT_CHARS:
            raise EndpointRejected(f"is longer than {MAX_ENDPOINT_CHARS} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise EndpointRejected("is not a valid URL") from None
        host = (parts.hostname or "").lower()
        if not host:
            raise EndpointRejected("has no host")
        if parts.username is not None or parts.password is not None:
            raise EndpointRejected("must not carry credentials")
        dev = host in self.dev_hosts
        if parts.scheme != "https" and not (dev and parts.scheme == "http"):
            raise EndpointRejected("must use https")
        if parse_ip(host) is not None and not dev:
            raise EndpointRejected("must name a push service host, not an IP address")
        if not self.host_allowed(host):
            raise EndpointRejected("is not on the allowed push services list")
        port = port or (443 if parts.scheme == "https" else 80)
        default = (parts.scheme == "https" and port == 443) or (
            parts.scheme == "http" and port == 80
        )
        netloc = f"[{host}]" if ":" in host else host
        origin = f"{parts.scheme}://{netloc}" + ("" if default else f":{port}")
        return origin, host, port

    def check_endpoint(
        self, url: str, *, resolve: Callable[[str, int], Iterable[str]] | None = None
    ) -> str:
        """Static checks plus DNS: every address must be public. Returns the origin."""
        origin, host, port = self.check_url(url)
        if host in self.dev_hosts:
            return origin
        try:
            addresses = list((resolve or resolve_host)(host, port))
        except OSError:
            raise EndpointRejected("host does not resolve") from None
        if not addresses:
            raise EndpointRejected("host does not resolve")
        for address in addresses:
            ip = parse_ip(address)
            if ip is None or not is_public_address(ip):
                raise EndpointRejected("host resolves to a private or reserved address")
        return origin

    def address_allowed(self, address: str) -> bool:
        """The connect-time check, on the address about to be connected to."""
        ip = parse_ip(address)
        if ip is None:
            return False
        return is_public_address(ip) or str(ip) in self.dev_addresses


class PushEndpointSettings(CommonSettings):
    """The endpoint policy's settings, read by the inbox (save time) and push-sender
    (connect time) alike so that both apply the same rules."""

    # Comma-separated push service hosts; "*.example.com" admits subdomains. Empty: any
    # public host (browsers pick the push service, so most deployments leave this empty).
    push_allowed_hosts: str = ""
    # Comma-separated hosts admitted although private or IP literals, over plain http too:
    # ONLY for tests and local development (e.g. "127.0.0.1,localhost"). Empty by default.
    push_dev_hosts: str = ""

    def endpoint_policy(self, *, resolve: bool = False) -> EndpointPolicy:
        return EndpointPolicy.from_settings(
            allowed_hosts=self.push_allowed_hosts, dev_hosts=self.push_dev_hosts, resolve=resolve
        )


class VapidPublicSettings(CommonSettings):
    """The application server key served to browsers (the inbox needs no private key)."""

    vapid_public_key: str | None = Field(
        default=None, description="base64url P-256 public key (65 bytes, uncompressed)"
    )

    @field_validator("vapid_public_key")
    @classmethod
    def _valid_public_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_p256_point(value)
        return value.strip()


def check_vapid_private_key(value: SecretStr) -> SecretStr:
    """Pydantic validator body: raise ValueError (never quoting the key) when unusable."""
    try:
        load_vapid_private_key(value.get_secret_value())
    except InvalidKey as exc:
        raise ValueError(str(exc)) from None
    return value
