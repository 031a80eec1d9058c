"""One-click unsubscribe, end to end: the link in a real digest, the inbox's endpoints, the
preference event through the outbox, and the next digest run honouring it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from notify_common.auth import issue_user_token
from notify_email_digest.main import run_digest
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.sink import MailSink
from notify_email_digest.testing import (
    Db,
    Kafka,
    mails_to,
    next_digest_time,
    notification,
    user,
    wait_until,
)
from notify_inbox.app import build_app as build_inbox
from notify_inbox.settings import InboxSettings

pytestmark = pytest.mark.integration

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def inbox(env: dict[str, str], engine: Engine) -> Iterator[tuple[TestClient, InboxSettings]]:
    """The inbox API with its outbox relay (the feed consumer is not needed here)."""
    values: dict[str, Any] = {
        k[len("NOTIFY_") :].lower(): v for k, v in env.items() if k.startswith("NOTIFY_")
    }
    values["inbox_consumer_enabled"] = False
    settings = InboxSettings.model_validate(values)
    with TestClient(build_inbox(settings, engine=engine)) as client:
        yield client, settings


def _link(mail: Any) -> str:
    """The https link of a mail's List-Unsubscribe header, as path?query."""
    url = mail.message["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    parts = urlsplit(url)
    assert parts.scheme == "https"
    return f"{parts.path}?{parts.query}"


def test_one_click_unsubscribe_turns_the_digest_off_and_nothing_else(
    start_service: Callable[..., Any],
    settings: EmailDigestSettings,
    inbox: tuple[TestClient, InboxSettings],
    sink: MailSink,
    kafka: Kafka,
    db: Db,
) -> None:
    api, inbox_settings = inbox
    start_service()
    # Carol's upstream record has push off: unsubscribing must not turn it back on.
    kafka.users(user("carol", channels={"push": False}), user("dave"))
    wait_until(lambda: db.known_users() == 2, what="the directory view")
    kafka.notify(notification("carol", title="carol 1"), notification("dave", title="dave 1"))
    wait_until(lambda: db.items("pending") == 2, what="notifications held")
    day1 = next_digest_time()
    assert run_digest(settings, day1)["sent"] == 2
    (carol_mail,) = mails_to(sink, "carol@mail.example.test")
    (dave_mail,) = mails_to(sink, "dave@mail.example.test")
    carol_link, dave_link = _link(carol_mail), _link(dave_mail)
    path = urlsplit(carol_link).path
    assert path == "/v1/email/unsubscribe"

    # GET (a link scanner, or the user opening the link) shows a page and changes nothing.
    page = api.get(carol_link)
    assert page.status_code == 200
    assert "<form method='post'" in page.text and "Unsubscribe" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert db.scalar("SELECT count(*) FROM user_preferences") == 0
    assert db.scalar("SELECT count(*) FROM outbox") == 0

    # Forged, altered, or someone else's token: refused, nothing changes.
    carol_query = dict(p.split("=", 1) for p in urlsplit(carol_link).query.split("&"))
    dave_query = dict(p.split("=", 1) for p in urlsplit(dave_link).query.split("&"))
    forged = [
        {**carol_query, "token": "A" * 43},
        {**carol_query, "token": carol_query["token"][:-2] + "xy"},
        {**carol_query, "token": dave_query["token"]},  # Dave's token, Carol's user
        {**carol_query, "list": "critical"},
        {"user": "carol", "list": "digest"},
    ]
    for query in forged:
        refused = api.post(f"{path}?{urlencode(query)}", data=ONE_CLICK)
        assert refused.status_code == 403, query
        assert api.get(f"{path}?{urlencode(query)}").status_code == 403
    assert db.scalar("SELECT count(*) FROM user_preferences") == 0
    assert db.scalar("SELECT count(*) FROM outbox") == 0

    # RFC 8058 one-click: a POST with no login or cookie turns Carol's digest off.
    done = api.post(carol_link, data=ONE_CLICK)
    assert done.status_code == 200 and "unsubscribed" in done.text
    token = issue_user_token(inbox_settings, "carol")
    prefs = api.get("/v1/preferences", headers={"Authorization": f"Bearer {token}"}).json()
    assert prefs["digest"]["enabled"] is False
    assert prefs["channels"] == {"in_app": True, "push": False, "email": True}
    dave_token = issue_user_token(inbox_settings, "dave")
    dave_prefs = api.get("/v1/preferences", headers={"Authorization": f"Bearer {dave_token}"})
    assert dave_prefs.json()["digest"]["enabled"] is True
    # Again: harmless, and no second event.
    assert api.post(carol_link, data=ONE_CLICK).status_code == 200
    assert db.scalar("SELECT count(*) FROM outbox") == 1

    # The change reaches email-digest through the outbox and Kafka...
    wait_until(
        lambda: db.scalar("SELECT prefs IS NOT NULL FROM email_recipients WHERE user_id = 'carol'"),
        what="email-digest seeing Carol's preference",
    )
    # ...so the next digest goes to Dave only; Carol's notification is reported suppressed.
    kafka.notify(notification("carol", title="carol 2"), notification("dave", title="dave 2"))
    wait_until(lambda: db.items("pending") == 2, what="notifications held")
    summary = run_digest(settings, day1 + timedelta(days=1))
    assert (summary["sent"], summary["suppressed"]) == (1, 1)
    assert len(mails_to(sink, "carol@mail.example.test")) == 1
    assert len(mails_to(sink, "dave@mail.example.test")) == 2
    # Critical mail is not a list: Carol still gets it.
    kafka.notify(notification("carol", title="security", critical=True))
    wait_until(lambda: len(mails_to(sink, "carol@mail.example.test")) == 2, timeout=15)
