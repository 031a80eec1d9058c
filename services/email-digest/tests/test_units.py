"""Unit tests (no servers): links, headers, templates, grouping, timing, SMTP errors."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest

from notify_common import email_links
from notify_email_digest import compose, render
from notify_email_digest.consumer import is_critical
from notify_email_digest.recipients import resolve, stored
from notify_email_digest.smtp import SendError, classify, parse_smtp_url
from notify_schemas.models import NotificationCreated, User, UserPreferences

KEY = b"k" * 32
UTC_ZONE = ZoneInfo("UTC")
BRAND = render.Branding(name="Notify", color="#4f46e5", app_url="https://chat.example.test")


def n(
    *,
    title: str = "New message in Demo #general",
    body: str = "Bob: hi",
    server: str | None = "s-1",
    channel: str | None = "general",
    minutes_ago: int = 0,
    action_url: str | None = "/servers/s-1/channels/general",
    type: str = "NEW_MESSAGE",
) -> NotificationCreated:
    return NotificationCreated.model_validate(
        {
            "notification_id": str(uuid.uuid4()),
            "user_id": "u-1",
            "type": type,
            "title": title,
            "body": body,
            "action_url": action_url,
            "metadata": {"server_id": server, "channel_id": channel},
            "priority": "normal",
            "channels": ["email"],
            "created_at": (
                datetime(2026, 11, 22, 8, 0, tzinfo=UTC) - timedelta(minutes=minutes_ago)
            ).isoformat(),
        }
    )


def as_parsed(message: EmailMessage) -> EmailMessage:
    """The message as a mail client reads it: sent as bytes, parsed back."""
    parsed = message_from_bytes(compose.to_bytes(message), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- unsubscribe tokens ----------------------------------------------------------------------


def test_a_token_opens_only_its_own_user_and_list() -> None:
    token = email_links.sign(KEY, user_id="u-carol", list_id="digest")
    assert email_links.verify(KEY, user_id="u-carol", list_id="digest", token=token)
    assert not email_links.verify(KEY, user_id="u-dave", list_id="digest", token=token)
    assert not email_links.verify(KEY, user_id="u-carol", list_id="critical", token=token)
    assert not email_links.verify(b"x" * 32, user_id="u-carol", list_id="digest", token=token)
    assert not email_links.verify(KEY, user_id="u-carol", list_id="digest", token=token[:-1] + "A")
    assert not email_links.verify(KEY, user_id="u-carol", list_id="digest", token="")


# --- headers ------------------------------------------------------------------------------------


def build(subject: str, *, to_name: str = "Carol", unsubscribe: bool = True) -> EmailMessage:
    return compose.build(
        subject=subject,
        sender_name="Notify\r\nBcc: evil@example.test",
        sender_address="notify@example.test",
        to_name=to_name,
        to_address="carol@example.test",
        text="plain & simple",
        html="<p>rich</p>",
        msg_id="<id-1@example.test>",
        date=datetime(2026, 11, 22, 9, tzinfo=UTC),
        unsubscribe=compose.Unsubscribe.build(
            base_url="https://notify.example.test/v1/email/unsubscribe",
            mailto_address="unsubscribe@example.test",
            key=KEY,
            user_id="u-carol",
            list_id="digest",
        )
        if unsubscribe
        else None,
    )


@pytest.mark.parametrize(
    "evil",
    ["hello\r\nBcc: x@y", "hello\nBcc: x@y", "hello\rBcc: x@y", "hello\u2028Bcc: x@y"],
)
def test_cr_lf_in_subject_or_names_cannot_add_a_header(evil: str) -> None:
    parsed = as_parsed(build(evil, to_name=evil))
    assert parsed["Bcc"] is None
    assert set(parsed.keys()) == {
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "X-Auto-Response-Suppress",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "MIME-Version",
        "Content-Type",
    }
    # The text stays in the value it was put in: a display name, the subject.
    assert [a.addr_spec for a in parsed["To"].addresses] == ["carol@example.test"]
    assert [a.addr_spec for a in parsed["From"].addresses] == ["notify@example.test"]
    assert parsed["Subject"] == "hello Bcc: x@y"


def test_a_digest_message_has_both_parts_and_one_click_unsubscribe() -> None:
    raw = compose.to_bytes(build("Notify: 3 new notifications"))
    # On the wire the header is plain URLs on one line (no RFC 2047 encoded words, which
    # mail clients do not decode in List-Unsubscribe), and every line ends in CRLF.
    line = next(x for x in raw.split(b"\r\n") if x.startswith(b"List-Unsubscribe:"))
    assert line.startswith(b"List-Unsubscribe: <https://notify.example.test/v1/email/")
    assert b"=?" not in line
    assert b"\n" not in raw.replace(b"\r\n", b"")
    parsed = as_parsed(build("Notify: 3 new notifications"))
    assert parsed.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in parsed.iter_parts()]
    assert types == ["text/plain", "text/html"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link, mailto = [v.strip().strip("<>") for v in parsed["List-Unsubscribe"].split(",")]
    assert link.startswith("https://notify.example.test/v1/email/unsubscribe?user=u-carol")
    assert "list=digest" in link and "token=" in link
    assert mailto.startswith("mailto:unsubscribe@example.test?subject=")
    assert parsed["Message-ID"] == "<id-1@example.test>"
    assert parsed["Auto-Submitted"] == "auto-generated"


def test_critical_mail_carries_no_unsubscribe_header() -> None:
    parsed = as_parsed(build("Security alert", unsubscribe=False))
    assert parsed["List-Unsubscribe"] is None and parsed["List-Unsubscribe-Post"] is None


# --- templates ----------------------------------------------------------------------------------


def test_html_is_escaped_and_text_is_not() -> None:
    evil = n(title="<script>alert(1)</script> & co", body='<img src=x onerror="x">')
    out = render.render_single(evil, locale="en", default_locale="en", tz=UTC_ZONE, brand=BRAND)
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "<img" not in out.html
    assert "<script>alert(1)</script> & co" in out.text  # plain text stays readable
    assert "https://chat.example.test/servers/s-1/channels/general" in out.html


def test_only_http_links_become_hrefs() -> None:
    assert render.link("javascript:alert(1)", "https://a.test") is None
    assert render.link("data:text/html,x", "https://a.test") is None
    assert render.link("//evil.test/x", "https://a.test") is None
    assert render.link("/servers/s", "") is None  # relative, and no base configured
    assert render.link("/servers/s", "https://a.test/") == "https://a.test/servers/s"
    assert render.link("https://b.test/x", "") == "https://b.test/x"


def test_digest_groups_by_channel_newest_first_and_counts_beyond_the_caps() -> None:
    items = (
        [n(channel="general", title=f"g{i}", minutes_ago=10 + i) for i in range(4)]
        + [n(channel="random", title=f"r{i}", minutes_ago=i) for i in range(2)]
        + [n(server="s-2", channel="ops", title=f"o{i}", minutes_ago=100 + i) for i in range(3)]
    )
    strings = render.strings_for("en")
    groups, hidden = render.group(
        items, tz=UTC_ZONE, app_url="", strings=strings, per_group=3, total=5
    )
    # Groups in order of their newest notification; entries newest first.
    assert [g.label for g in groups] == ["s-1 · #random", "s-1 · #general", "s-2 · #ops"]
    assert [e.title for e in groups[0].entries] == ["r0", "r1"]
    assert [e.title for e in groups[1].entries] == ["g0", "g1", "g2"]
    assert groups[1].more == 1
    assert groups[2].entries == [] and groups[2].more == 3  # the total cap (5) was reached
    assert hidden == 4

    out = render.render_digest(
        items,
        name="Carol",
        locale="en-GB",
        default_locale="en",
        tz=UTC_ZONE,
        brand=BRAND,
        unsubscribe_url="https://n.test/u?t=1&x=2",
        per_group=3,
        total=5,
    )
    assert out.subject == "Notify: 9 new notifications"
    assert "and 1 more in this channel" in out.text and "and 1 more in this channel" in out.html
    assert "and 3 more notifications in other channels" in out.text
    assert out.text.index("r0") < out.text.index("g0")
    assert "https://n.test/u?t=1&amp;x=2" in out.html  # escaped inside the href
    assert "https://n.test/u?t=1&x=2" in out.text


def test_digest_speaks_the_users_language_with_a_fallback() -> None:
    one = [n()]
    fr = render.render_digest(
        one, name="Zoé", locale="fr-CA", default_locale="en", tz=UTC_ZONE, brand=BRAND,
        unsubscribe_url="https://n.test/u", per_group=5, total=50,
    )  # fmt: skip
    assert fr.subject == "Notify : 1 nouvelle notification"
    assert "Se désabonner" in fr.text
    xx = render.render_digest(
        one, name="X", locale="xx", default_locale="de", tz=UTC_ZONE, brand=BRAND,
        unsubscribe_url="https://n.test/u", per_group=5, total=50,
    )  # fmt: skip
    assert xx.subject == "Notify: 1 neue Benachrichtigung"


def test_times_are_shown_in_the_users_timezone() -> None:
    out = render.render_single(
        n(), locale="en", default_locale="en", tz=ZoneInfo("Asia/Tokyo"), brand=BRAND
    )
    assert "2026-11-22 17:00" in out.text  # 08:00 UTC


def test_template_buttons_are_mail_links_and_api_actions_go_through_the_center() -> None:
    note = NotificationCreated.model_validate(
        {
            **n().model_dump(mode="json"),
            "actions": [
                {"label": "Reply", "url": "/servers/s-1/channels/general?reply=m-1"},
                {"label": "Mark as read", "action": "mark_read"},
            ],
        }
    )
    brand = render.Branding(
        name="Notify", color="#4f46e5", app_url="https://chat.example.test",
        center_url="https://notify.example.test/app/",
    )  # fmt: skip
    out = render.render_single(note, locale="en", default_locale="en", tz=UTC_ZONE, brand=brand)
    reply = "https://chat.example.test/servers/s-1/channels/general?reply=m-1"
    read = f"https://notify.example.test/app/?mark_read={note.notification_id}"
    assert f"Reply: {reply}" in out.text and f"Mark as read: {read}" in out.text
    assert f'href="{reply}"' in out.html and f'href="{read}"' in out.html
    # Without the center's address the API button is left out, never a dead link.
    bare = render.render_single(note, locale="en", default_locale="en", tz=UTC_ZONE, brand=BRAND)
    assert "Mark as read" not in bare.text and "Reply:" in bare.text


# --- when the digest is due -------------------------------------------------------------------


def test_digest_hour_is_the_users_own_in_their_zone_else_the_utc_default() -> None:
    own = stored(
        User.model_validate(
            {
                "user_id": "u-1",
                "display_name": "U",
                "email": "u@x.test",
                "timezone": "America/New_York",
                "digest": {"hour_local": 7},
            }
        )
    )
    r = resolve(user_id="u-1", user=own, prefs=None, default_hour_utc=9)
    day, at = r.digest_slot(datetime(2026, 11, 22, 13, 0, tzinfo=UTC))  # 08:00 in New York
    assert day == date(2026, 11, 22) and at == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    day, at = r.digest_slot(datetime(2026, 11, 22, 11, 0, tzinfo=UTC))  # 06:00 there
    assert day == date(2026, 11, 21)

    unset = stored(
        User.model_validate({"user_id": "u-2", "display_name": "U", "timezone": "Asia/Tokyo"})
    )
    r = resolve(user_id="u-2", user=unset, prefs=None, default_hour_utc=9)
    assert (r.digest_hour, str(r.digest_zone)) == (9, "UTC")
    day, at = r.digest_slot(datetime(2026, 11, 22, 9, 30, tzinfo=UTC))
    assert at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_own_preferences_override_the_upstream_record() -> None:
    upstream = stored(
        User.model_validate({"user_id": "u-1", "display_name": "U", "email": "u@x.test"})
    )
    prefs = stored(
        UserPreferences.model_validate(
            {"user_id": "u-1", "channels": {"email": True}, "digest": {"enabled": False}}
        )
    )
    r = resolve(user_id="u-1", user=upstream, prefs=prefs, default_hour_utc=9)
    assert r.suppression() == "digest_off"
    assert (
        resolve(user_id="u-1", user=upstream, prefs=None, default_hour_utc=9).suppression() is None
    )
    assert resolve(user_id="u-1", user=None, prefs=prefs, default_hour_utc=9).suppression() == (
        "unknown_user"
    )
    bad_zone = stored(
        User.model_validate({"user_id": "u-1", "display_name": "U", "timezone": "Mars/Base"})
    )
    assert (
        str(resolve(user_id="u-1", user=bad_zone, prefs=None, default_hour_utc=9).timezone) == "UTC"
    )


def test_configured_types_are_critical_like_the_flag() -> None:
    assert is_critical(n(type="SYSTEM"), ["SYSTEM"])
    assert not is_critical(n(type="NEW_MESSAGE"), ["SYSTEM"])
    flagged = n().model_copy(update={"critical": True})
    assert is_critical(flagged, [])
    # A mention is high priority, not critical: it waits for the digest.
    assert not is_critical(n(type="MENTION").model_copy(update={"priority": "high"}), [])


# --- SMTP ------------------------------------------------------------------------------------


def test_smtp_urls() -> None:
    plain = parse_smtp_url("smtp://mail.example.test")
    assert (plain.port, plain.use_tls, plain.start_tls) == (25, False, None)
    starttls = parse_smtp_url("smtp+starttls://user%40x:p%3Ass@mail.example.test:2587")
    assert (starttls.port, starttls.start_tls, starttls.username, starttls.password) == (
        2587,
        True,
        "user@x",
        "p:ss",
    )
    tls = parse_smtp_url("smtps://mail.example.test?verify=false")
    assert (tls.port, tls.use_tls, tls.validate_certs) == (465, True, False)
    assert "p:ss" not in repr(starttls) and "p:ss" not in starttls.describe()
    for bad in ("http://mail.example.test", "smtp://", "smtp://host:notaport"):
        with pytest.raises(ValueError):
            parse_smtp_url(bad)


def test_4xx_and_connection_errors_are_temporary_5xx_permanent() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y")]
    )
    assert classify(refused).temporary is False and classify(refused).code == 550
    greylisted = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(451, "try later", "x@y")]
    )
    assert classify(greylisted).temporary is True
    assert classify(aiosmtplib.SMTPDataError(552, "too big")).temporary is False
    assert classify(aiosmtplib.SMTPDataError(421, "closing")).temporary is True
    assert classify(aiosmtplib.SMTPConnectError("refused")).temporary is True
    assert classify(ConnectionRefusedError()).temporary is True
    assert classify(aiosmtplib.SMTPReadTimeoutError("slow")).status_class == "timeout"
    # A bad password is the operator's to fix, not a reason to fail every mail for good.
    assert classify(aiosmtplib.SMTPAuthenticationError(535, "bad creds")).temporary is True
    assert isinstance(classify(SendError("x", temporary=False)), SendError)
