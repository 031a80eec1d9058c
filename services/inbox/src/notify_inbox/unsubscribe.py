"""One-click unsubscribe from the email digest (RFC 8058), without login or cookie.

The link in a digest's List-Unsubscribe header (and its footer) carries the user, the list
and an HMAC token that email-digest signed (notify_common.email_links): whoever holds the
link may take that user off that list, nobody can forge one for another user or list.

* GET shows a confirmation page with a button and changes nothing: mail scanners and link
  previewers fetch every link of a mail, and must not unsubscribe anyone by doing so.
* POST (what a mail client sends for one-click, body "List-Unsubscribe=One-Click"; also
  the page's button) turns the user's digest off. The change is the user's own preference:
  it is written like PUT /v1/preferences does (state row and outbox event in one
  transaction), so the fanout, email-digest and the user's settings page all see it, and
  the user can turn the digest back on there.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from notify_common import email_links, metrics
from notify_common.db.models import EmailRecipientRow, UserPreferencesRow
from notify_inbox import preferences
from notify_inbox.deps import SessionDep
from notify_schemas import models

router = APIRouter(tags=["email"])

UserParam = Annotated[str, Query(max_length=128, description="The user the link was sent to")]
ListParam = Annotated[
    str, Query(alias="list", max_length=32, description='The list to leave ("digest")')
]
TokenParam = Annotated[str, Query(max_length=128, description="The link's HMAC token")]

# Pages that hold a token in their URL: never cached, indexed or sent on as a Referer.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _key(request: Request) -> bytes:
    holder = getattr(request.app.state, "email_signing_key", None)
    if holder is None:
        holder = email_links.SigningKey(request.app.state.engine)
        request.app.state.email_signing_key = holder
    key: bytes = holder.get()
    return key


def _page(title: str, body: str, *, status: int) -> HTMLResponse:
    return HTMLResponse(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head>"
        "<body style='font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem'>"
        f"<h1 style='font-size:1.4rem'>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers=_HEADERS,
    )


def _refused() -> HTMLResponse:
    metrics.EMAIL_UNSUBSCRIBES.labels(result="refused").inc()
    return _page(
        "This unsubscribe link is not valid",
        "<p>It may have been altered. Use the link of a recent email, or change your email "
        "settings in the app.</p>",
        status=403,
    )


def disable_digest(*, session: Session, user_id: str, correlation_id: str | None) -> bool:
    """Turn the user's digest off, keeping the rest of their delivery preferences; commits.
    Returns False when it was already off (nothing is written then)."""
    own = session.execute(
        select(
            UserPreferencesRow.channels, UserPreferencesRow.quiet_hours, UserPreferencesRow.digest
        )
        .where(UserPreferencesRow.user_id == user_id)
        .with_for_update()
    ).one_or_none()
    base: dict[str, Any]
    if own is not None:
        base = {"channels": own.channels, "quiet_hours": own.quiet_hours, "digest": own.digest}
    else:
        # No preferences of their own yet: a record of theirs would override the upstream
        # User record's delivery settings (docs/decisions/0002), so it starts from those
        # (as email-digest last saw them) rather than from the defaults.
        upstream = session.execute(
            select(EmailRecipientRow.user).where(EmailRecipientRow.user_id == user_id)
        ).scalar_one_or_none()
        base = {k: v for k, v in (upstream or {}).items() if k in ("channels", "quiet_hours")}
        base["digest"] = (upstream or {}).get("digest") or {}
    digest = models.DigestSettings.model_validate(base.get("digest") or {})
    if own is not None and not digest.enabled:
        return False
    prefs = preferences.PreferencesIn.model_validate(
        {**base, "digest": {"enabled": False, "hour_local": digest.hour_local}}
    )
    preferences.put_preferences(
        session=session, user_id=user_id, preferences=prefs, correlation_id=correlation_id
    )
    return True


@router.get("/email/unsubscribe", response_class=HTMLResponse)
def confirm_page(
    request: Request,
    user: UserParam = "",
    list_id: ListParam = email_links.DIGEST_LIST,
    token: TokenParam = "",
) -> HTMLResponse:
    """A confirmation page for the link in a digest; changes nothing (scanners GET links)."""
    if not email_links.verify(_key(request), user_id=user, list_id=list_id, token=token):
        return _refused()
    # The form posts back to this very URL (the token stays in the query, as for one-click).
    action = html.escape(str(request.url.path) + "?" + request.url.query, quote=True)
    return _page(
        "Unsubscribe from the daily digest?",
        "<p>You will no longer receive the daily email digest. Important notices about your "
        "account are still sent. You can turn the digest back on in your settings.</p>"
        f"<form method='post' action='{action}'>"
        "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit' style='font-size:1rem;padding:.5rem 1rem'>Unsubscribe</button>"
        "</form>",
        status=200,
    )


@router.post("/email/unsubscribe", response_class=HTMLResponse)
def unsubscribe(
    request: Request,
    session: SessionDep,
    user: UserParam = "",
    list_id: ListParam = email_links.DIGEST_LIST,
    token: TokenParam = "",
) -> HTMLResponse:
    """RFC 8058 one-click: turn the user's digest off. No login: the token is the proof."""
    if not email_links.verify(_key(request), user_id=user, list_id=list_id, token=token):
        return _refused()
    changed = disable_digest(
        session=session,
        user_id=user,
        correlation_id=getattr(request.state, "correlation_id", None),
    )
    metrics.EMAIL_UNSUBSCRIBES.labels(result="ok").inc()
    return _page(
        "You are unsubscribed",
        "<p>You will no longer receive the daily email digest"
        + ("" if changed else " (it was already off)")
        + ". You can turn it back on in your settings.</p>",
        status=200,
    )
