"""Building the MIME message: headers that cannot be injected into, both parts, and the
RFC 2369/8058 unsubscribe headers.

A header value taken from data (a notification's title in the subject, a user's display
name) goes through `one_line`, which turns CR, LF and every other control character into a
space, so "…\\r\\nBcc: x@y" stays text inside the Subject instead of becoming a header.
The envelope recipient is passed to the SMTP client explicitly, never derived from headers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote, urlencode

from notify_common import email_links

# Bodies are encoded for any server: quoted-printable or base64 when not plain ASCII (no
# reliance on 8BITMIME), lines folded at 78 as RFC 5322 recommends.
POLICY = policy.SMTP.clone(cte_type="7bit")
# On the wire, headers set raw (List-Unsubscribe) are written as they are. Folded like the
# others, its long URL would become RFC 2047 encoded words, which no client reads as a URL.
WIRE_POLICY = POLICY.clone(refold_source="none")

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]+")
_SPACES = re.compile(r"\s{2,}")


def one_line(value: str, *, limit: int = 200) -> str:
    """A header-safe single line: control characters (CR and LF included) become spaces,
    runs of spaces one, and at most `limit` characters remain."""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Unsubscribe:
    """A user's way off a list: the https link (POST = one click) and a mailto."""

    url: str
    mailto: str

    @classmethod
    def build(
        cls, *, base_url: str, mailto_address: str, key: bytes, user_id: str, list_id: str
    ) -> Unsubscribe:
        token = email_links.sign(key, user_id=user_id, list_id=list_id)
        query = urlencode({"user": user_id, "list": list_id, "token": token})
        sep = "&" if "?" in base_url else "?"
        subject = quote(f"unsubscribe {list_id} {user_id} {token}")
        return cls(
            url=f"{base_url}{sep}{query}", mailto=f"mailto:{mailto_address}?subject={subject}"
        )


def message_id(local: str, domain: str) -> str:
    """A Message-ID derived from what the mail is (a notification, a user's digest), so a
    mail sent twice in the crash window carries the same id and clients can fold them."""
    return f"<{local}@{domain}>"


def digest_local_id(user_id: str, digest_id: int) -> str:
    return f"digest.{digest_id}.{uuid.uuid5(uuid.NAMESPACE_URL, user_id).hex[:12]}"


def build(
    *,
    subject: str,
    sender_name: str,
    sender_address: str,
    to_name: str,
    to_address: str,
    text: str,
    html: str,
    msg_id: str,
    date: datetime,
    unsubscribe: Unsubscribe | None,
) -> EmailMessage:
    """A multipart/alternative message (plain text first, HTML preferred by clients).

    Raises ValueError when an address cannot be written into a header at all.
    """
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=one_line(sender_name, limit=100), addr_spec=sender_address)
    msg["To"] = Address(display_name=one_line(to_name, limit=100), addr_spec=to_address)
    msg["Subject"] = one_line(subject, limit=250)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = msg_id
    # RFC 3834: an automatic message; asks auto-responders (vacation replies) to stay quiet.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    if unsubscribe is not None:
        value = f"<{unsubscribe.url}>, <{unsubscribe.mailto}>"
        if one_line(value, limit=900) != value:
            # Raw headers are not sanitised by the email package: refuse anything odd.
            raise ValueError("the unsubscribe link is not a single header line")
        msg.set_raw("List-Unsubscribe", value)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def to_bytes(message: EmailMessage) -> bytes:
    """The message as sent (CRLF line ends, raw headers unfolded)."""
    return message.as_bytes(policy=WIRE_POLICY)
