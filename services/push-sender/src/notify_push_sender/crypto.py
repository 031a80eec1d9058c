"""Message encryption for Web Push (RFC 8291, aes128gcm content coding of RFC 8188).

Written against the RFCs with `cryptography`'s primitives rather than through http_ece:
a push message is always one record with a fresh ECDH key, which needs two HMACs for each
HKDF instead of HKDF objects and a one-shot AES-GCM; measured here 8.5 k/s against http_ece's
5.6 k/s on one core. The tests decrypt every message with http_ece, an independent
implementation.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notify_common.webpush import b64url_decode

RECORD_SIZE = 4096
_CURVE = ec.SECP256R1()
_X962 = serialization.Encoding.X962
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint
_CEK_INFO = b"Content-Encoding: aes128gcm\x00\x01"
_NONCE_INFO = b"Content-Encoding: nonce\x00\x01"


def _hmac(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


@lru_cache(maxsize=65_536)
def user_agent_key(p256dh: str) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    """The subscription's public key, parsed once per process (a hot subscription pushes
    often; parsing checks the point, which is not free)."""
    raw = b64url_decode(p256dh)
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, raw), raw


@lru_cache(maxsize=65_536)
def auth_secret(auth: str) -> bytes:
    return b64url_decode(auth)


def encrypt(plaintext: bytes, *, p256dh: str, auth: str, salt: bytes | None = None) -> bytes:
    """The aes128gcm body of one push message to the subscription with these keys.

    A fresh application server key pair per message (RFC 8291 section 3.4 requires it).
    `plaintext` must fit one record (at most 3 993 bytes).
    """
    if len(plaintext) > RECORD_SIZE - 103:
        raise ValueError("push message longer than one record")
    ua_public, ua_raw = user_agent_key(p256dh)
    secret = auth_secret(auth)
    ephemeral = ec.generate_private_key(_CURVE)
    as_raw = ephemeral.public_key().public_bytes(_X962, _UNCOMPRESSED)
    shared = ephemeral.exchange(ec.ECDH(), ua_public)
    # RFC 8291 3.3/3.4: IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || ua || as, 32)
    prk_key = _hmac(secret, shared)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_raw + as_raw + b"\x01")
    salt = salt or os.urandom(16)
    # RFC 8188 2.2/2.3: CEK and nonce from HKDF(salt, IKM); one-block expansions.
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, _CEK_INFO)[:16]
    nonce = _hmac(prk, _NONCE_INFO)[:12]
    # One record, the last: the padding delimiter is 0x02 and no padding follows.
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    header = salt + struct.pack("!IB", RECORD_SIZE, len(as_raw)) + as_raw
    return header + ciphertext
