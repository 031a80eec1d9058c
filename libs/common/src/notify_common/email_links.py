"""Unsubscribe links of notification email: an HMAC token bound to one user and one list.

email-digest signs the links it puts in List-Unsubscribe; the inbox verifies them on
GET/POST /v1/email/unsubscribe, where nobody is logged in (RFC 8058 one-click). A token
proves only "whoever holds this link may take this user off this list", so it never
expires (a link in last month's mail must still work), and is bound to both the user and
the list so that it cannot be replayed for anyone or anything else.

The HMAC key lives in PostgreSQL (email_signing_keys), created on first use by whichever
service needs it first: both services already share the database, so there is no secret
to distribute and keep equal between them (docs/decisions/0006-email-digest.md). Deleting
the row rotates it, which invalidates every link already sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from typing import cast

from sqlalchemy import Engine, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from notify_common.db.models import EmailSigningKeyRow

# The lists a user can leave by a link. Critical mail is not a list: it has no link.
DIGEST_LIST = "digest"
LISTS = frozenset({DIGEST_LIST})

_KEY_ID = 1
# Domain separation: this key signs nothing else, but a label keeps it that way.
_LABEL = b"notify-unsubscribe-v1"

signing_keys = cast(Table, EmailSigningKeyRow.__table__)


def sign(key: bytes, *, user_id: str, list_id: str) -> str:
    """The token of (user, list): base64url HMAC-SHA256, 43 characters."""
    mac = hmac.new(key, b"\0".join([_LABEL, list_id.encode(), user_id.encode()]), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def verify(key: bytes, *, user_id: str, list_id: str, token: str) -> bool:
    """True only for the token `sign` gives this user and list (constant-time compare)."""
    # A token is base64url; anything else is refused before compare_digest, which raises
    # TypeError (a 500) for str arguments holding non-ASCII characters.
    if list_id not in LISTS or not token or len(token) > 128 or not token.isascii():
        return False
    return hmac.compare_digest(sign(key, user_id=user_id, list_id=list_id), token)


class SigningKey:
    """The shared key, read (or created) once per process and then cached."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = load_or_create(self.engine)
        return self._key


def load_or_create(engine: Engine) -> bytes:
    """The key in the database; the first caller creates it (concurrent callers agree,
    because only one insert wins and everyone reads the winner's key)."""
    with engine.begin() as conn:
        conn.execute(
            pg_insert(signing_keys)
            .values(id=_KEY_ID, key=secrets.token_bytes(32))
            .on_conflict_do_nothing(index_elements=[signing_keys.c.id])
        )
        key: bytes = conn.execute(
            select(signing_keys.c.key).where(signing_keys.c.id == _KEY_ID)
        ).scalar_one()
    return key
