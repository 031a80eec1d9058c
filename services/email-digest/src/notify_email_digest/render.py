"""Mail content: Jinja2 templates (HTML autoescaped, plain text not), the digest's grouping,
and the few sentences a mail needs in the user's language.

Everything that comes from a notification (titles, bodies, names, URLs) is data to the
templates: the HTML templates escape it, and only http(s) links become hrefs, so a
notification can neither inject markup nor a javascript: link.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

import jinja2

from notify_schemas.models import NotificationCreated

# Sentences of every mail, per language. A user's locale ("fr-CA") picks by its language;
# an unknown one falls back to NOTIFY_EMAIL_DEFAULT_LOCALE, then English.
STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "digest_subject_one": "{brand}: 1 new notification",
        "digest_subject_many": "{brand}: {count} new notifications",
        "digest_heading": "Your daily digest",
        "digest_intro": "Hello {name}, here is what you missed.",
        "more_in_group": "and {count} more in this channel",
        "more_total": "and {count} more notifications in other channels",
        "open": "Open",
        "announcements": "Announcements",
        "other": "Other",
        "critical_note": "You receive this because it is an important notice about your account.",
        "digest_note": "You receive this digest because email notifications are on.",
        "unsubscribe": "Unsubscribe from the daily digest",
    },
    "fr": {
        "digest_subject_one": "{brand} : 1 nouvelle notification",
        "digest_subject_many": "{brand} : {count} nouvelles notifications",
        "digest_heading": "Votre résumé quotidien",
        "digest_intro": "Bonjour {name}, voici ce que vous avez manqué.",
        "more_in_group": "et {count} de plus dans ce salon",
        "more_total": "et {count} notifications de plus dans d'autres salons",
        "open": "Ouvrir",
        "announcements": "Annonces",
        "other": "Autres",
        "critical_note": (
            "Vous recevez ce message car il s'agit d'un avis important sur votre compte."
        ),
        "digest_note": "Vous recevez ce résumé car les notifications par e-mail sont activées.",
        "unsubscribe": "Se désabonner du résumé quotidien",
    },
    "de": {
        "digest_subject_one": "{brand}: 1 neue Benachrichtigung",
        "digest_subject_many": "{brand}: {count} neue Benachrichtigungen",
        "digest_heading": "Ihre tägliche Zusammenfassung",
        "digest_intro": "Hallo {name}, das haben Sie verpasst.",
        "more_in_group": "und {count} weitere in diesem Kanal",
        "more_total": "und {count} weitere Benachrichtigungen in anderen Kanälen",
        "open": "Öffnen",
        "announcements": "Ankündigungen",
        "other": "Sonstiges",
        "critical_note": "Sie erhalten diese Nachricht, weil sie Ihr Konto betrifft.",
        "digest_note": (
            "Sie erhalten diese Zusammenfassung, weil E-Mail-Benachrichtigungen aktiv sind."
        ),
        "unsubscribe": "Tägliche Zusammenfassung abbestellen",
    },
}


def strings_for(locale: str, default: str = "en") -> dict[str, str]:
    for candidate in (locale, default):
        lang = (candidate or "").replace("_", "-").split("-")[0].lower()
        if lang in STRINGS:
            return STRINGS[lang]
    return STRINGS["en"]


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("notify_email_digest", "templates"),
        # HTML templates escape every value; the text ones must not (a "&" stays "&").
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class Branding:
    name: str
    color: str
    app_url: str  # prefix of relative action URLs ("" = no links for them)
    # The notification center's public address, where API-action buttons lead ("" = none).
    center_url: str = ""


@dataclass(frozen=True)
class Entry:
    """One notification as a mail shows it."""

    title: str
    body: str
    url: str | None
    when: str  # local time, e.g. "2026-11-22 09:41"
    created_at: datetime
    # The template's buttons that can be links in a mail: (label, absolute href).
    buttons: tuple[tuple[str, str], ...] = ()


@dataclass
class Group:
    label: str
    entries: list[Entry] = field(default_factory=list)
    more: int = 0  # notifications of this group not listed (over the caps)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def link(url: str | None, app_url: str) -> str | None:
    """An absolute http(s) link for the mail, or None (relative without a base, or any
    other scheme: a mail must never carry a javascript: or data: href)."""
    if not url:
        return None
    if url.startswith("/") and not url.startswith("//"):
        return app_url.rstrip("/") + url if app_url else None
    if url.lower().startswith(("https://", "http://")):
        return url
    return None


def buttons(
    n: NotificationCreated, *, app_url: str, center_url: str
) -> tuple[tuple[str, str], ...]:
    """The notification's template buttons as mail links: a page through `link`, an API
    action through the notification center (which performs it with the user's session)."""
    out = []
    for a in n.actions:
        if a.url is not None:
            href = link(a.url, app_url)
        else:
            href = link(f"{center_url}?{a.action}={n.notification_id}", "") if center_url else None
        if href:
            out.append((a.label, href))
    return tuple(out)


def entry(n: NotificationCreated, *, tz: ZoneInfo, app_url: str, center_url: str = "") -> Entry:
    return Entry(
        title=n.title,
        body=n.body,
        url=link(n.action_url, app_url),
        when=n.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        created_at=n.created_at,
        buttons=buttons(n, app_url=app_url, center_url=center_url),
    )


def group_label(n: NotificationCreated, strings: dict[str, str]) -> str:
    m = n.metadata
    if m.server_id and m.channel_id:
        return f"{m.server_id} · #{m.channel_id}"
    if m.server_id:
        return m.server_id
    if n.type in ("ADMIN_ANNOUNCEMENT", "SYSTEM"):
        return strings["announcements"]
    return strings["other"]


def group(
    notifications: Sequence[NotificationCreated],
    *,
    tz: ZoneInfo,
    app_url: str,
    strings: dict[str, str],
    per_group: int,
    total: int,
) -> tuple[list[Group], int]:
    """Group by server/channel, newest first (groups ordered by their newest notification),
    at most `per_group` listed per group and `total` in all; the rest are counted.
    Returns (every group, in order; a group the total cap left empty only counts), and
    how many notifications are not listed in all."""
    ordered = sorted(notifications, key=lambda n: n.created_at, reverse=True)
    groups: dict[tuple[str | None, str | None, str], Group] = {}
    counts: dict[tuple[str | None, str | None, str], int] = {}
    for n in ordered:
        label = group_label(n, strings)
        key = (n.metadata.server_id, n.metadata.channel_id, label)
        g = groups.setdefault(key, Group(label=label))
        counts[key] = counts.get(key, 0) + 1
        g.entries.append(entry(n, tz=tz, app_url=app_url))
    budget = total
    out: list[Group] = []
    for key, g in groups.items():  # insertion order = newest notification first
        shown = min(len(g.entries), per_group, budget)
        budget -= shown
        g.more = counts[key] - shown
        g.entries = g.entries[:shown]
        out.append(g)
    return out, sum(g.more for g in out)


def render_digest(
    notifications: Sequence[NotificationCreated],
    *,
    name: str,
    locale: str,
    default_locale: str,
    tz: ZoneInfo,
    brand: Branding,
    unsubscribe_url: str,
    per_group: int,
    total: int,
) -> Rendered:
    s = strings_for(locale, default_locale)
    groups, _hidden = group(
        notifications, tz=tz, app_url=brand.app_url, strings=s, per_group=per_group, total=total
    )
    # Groups the total cap left out entirely are summed up in one closing line; the others
    # say themselves how many of theirs are not listed.
    elsewhere = sum(g.more for g in groups if not g.entries)
    count = len(notifications)
    subject = (s["digest_subject_one"] if count == 1 else s["digest_subject_many"]).format(
        brand=brand.name, count=count
    )
    context = {
        "s": s,
        "brand": brand,
        "lang": locale.split("-")[0] or "en",
        "heading": s["digest_heading"],
        "intro": s["digest_intro"].format(name=name),
        "groups": [g for g in groups if g.entries],
        "elsewhere": elsewhere,
        "more_total": s["more_total"].format(count=elsewhere),
        "unsubscribe_url": unsubscribe_url,
        "subject": subject,
    }
    env = environment()
    return Rendered(
        subject=subject,
        text=env.get_template("digest.txt.j2").render(context),
        html=env.get_template("digest.html.j2").render(context),
    )


def render_single(
    n: NotificationCreated,
    *,
    locale: str,
    default_locale: str,
    tz: ZoneInfo,
    brand: Branding,
) -> Rendered:
    s = strings_for(locale, default_locale)
    context = {
        "s": s,
        "brand": brand,
        "lang": locale.split("-")[0] or "en",
        "entry": entry(n, tz=tz, app_url=brand.app_url, center_url=brand.center_url),
        "subject": n.title,
    }
    env = environment()
    return Rendered(
        subject=f"[{brand.name}] {n.title}",
        text=env.get_template("single.txt.j2").render(context),
        html=env.get_template("single.html.j2").render(context),
    )
