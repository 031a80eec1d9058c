"""The daily digest, driven with the test's own clock: one mail per user listing exactly
their notifications; the quota defers digests to the next run, merged, never dropped; quota
alerts reach a real webhook once per level."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from notify_common import email_links
from notify_email_digest.main import run_digest
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.sink import MailSink
from notify_email_digest.testing import (
    Db,
    Kafka,
    Webhook,
    mails_to,
    next_digest_time,
    notification,
    parts,
    text_of,
    user,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_digest_run_mails_each_user_exactly_their_own_notifications(
    start_service: Callable[..., Any],
    settings: EmailDigestSettings,
    engine: Engine,
    sink: MailSink,
    kafka: Kafka,
    db: Db,
) -> None:
    start_service()
    kafka.users(
        user("carol", display_name="Carol", timezone="Europe/Paris"),
        user("dave"),
        user("nomail", email=None),
    )
    wait_until(lambda: db.known_users() == 3, what="the directory view")
    carol = [
        notification("carol", title="carol one", channel="general"),
        notification("carol", title="carol two", channel="random"),
        notification("carol", title="carol three", channel="general"),
    ]
    dave = [notification("dave", title="dave one")]
    push_only = notification("dave", title="not for email", channels=("in_app", "push"))
    kafka.notify(*carol, *dave, push_only, notification("nomail", title="nobody reads"))
    wait_until(lambda: db.items("pending") == 5, what="five notifications held")

    # Everything arrived after the last digest time: a run now sends nothing (tomorrow's).
    # A user without an address will never get one: theirs are reported at once.
    summary = run_digest(settings, datetime.now(UTC))
    assert (summary["sent"], summary["suppressed"]) == (0, 1)
    assert sink.snapshot() == []

    now = next_digest_time()
    summary = run_digest(settings, now)
    assert (summary["sent"], summary["suppressed"]) == (2, 0)
    (carol_mail,) = mails_to(sink, "carol@mail.example.test")
    (dave_mail,) = mails_to(sink, "dave@mail.example.test")
    assert len(sink.snapshot()) == 2

    text = text_of(carol_mail)
    for n in carol:
        assert n.title in text
    assert "dave one" not in text and "not for email" not in text
    # Grouped by channel, the group with the newest notification first, newest first inside.
    assert text.index("s-demo · #general") < text.index("s-demo · #random")
    assert text.index("carol three") < text.index("carol one")
    assert carol_mail.message["Subject"] == "Notify: 3 new notifications"
    assert "dave one" in text_of(dave_mail) and "carol" not in text_of(dave_mail).lower()
    assert set(parts(dave_mail.message)) == {"text/plain", "text/html"}

    # Its one-click unsubscribe link is signed for Carol and the digest list, and arrives
    # as a plain URL (not folded into encoded words).
    assert carol_mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert b"List-Unsubscribe: <https://notify.example.test/v1/email/unsubscribe?user=carol&" in (
        carol_mail.data
    )
    url = carol_mail.message["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["user"] == "carol" and query["list"] == "digest"
    key = email_links.load_or_create(engine)
    assert email_links.verify(key, user_id="carol", list_id="digest", token=query["token"])

    # Exactly once per user and day: the same run again sends nothing more.
    assert run_digest(settings, now + timedelta(minutes=5))["sent"] == 0
    assert len(sink.snapshot()) == 2

    outcomes = kafka.outcomes(expect=5 + 5)  # 5 held (deferred), then 4 sent + 1 suppressed
    final = Counter(o["outcome"] for o in outcomes)
    assert final == {"deferred": 5, "sent": 4, "suppressed": 1}


def test_the_quota_defers_digests_to_the_next_run_and_alerts_once_per_level(
    start_service: Callable[..., Any],
    settings: EmailDigestSettings,
    sink: MailSink,
    kafka: Kafka,
    db: Db,
    webhook: Webhook,
) -> None:
    # Every replica (this service, the run below) has the same quota and webhook.
    service = start_service(email_daily_quota=5, email_quota_webhook_url=SecretStr(webhook.url))
    quota = service.settings
    users = [f"u{i}" for i in range(8)]
    kafka.users(*(user(u) for u in users))
    wait_until(lambda: db.known_users() == 8, what="the directory view")
    kafka.notify(*(notification(u, title=f"first for {u}") for u in users))
    wait_until(lambda: db.items("pending") == 8, what="eight notifications held")

    day1 = next_digest_time()
    summary = run_digest(quota, day1)
    assert (summary["sent"], summary["deferred"]) == (5, 3)
    got = {u for u in users if mails_to(sink, f"{u}@mail.example.test")}
    deferred = sorted(set(users) - got)
    assert len(got) == 5 and len(deferred) == 3

    # 4 of 5 reached 80 %; the fifth reached 90 % and 100 % at once: three alerts.
    alerts = wait_until(lambda: len(webhook.bodies) >= 3 and webhook.bodies, what="3 alerts")
    assert sorted(a["level"] for a in alerts) == ["critical", "exhausted", "warning"]
    for alert in alerts:
        assert alert["service"] == "email-digest"
        assert alert["environment"] == settings.environment
        assert alert["timestamp"] and alert["text"]
        assert alert["limit"] == 5
    assert db.rows("SELECT used, deferred FROM email_quota_days WHERE day = :d", d=day1.date()) == [
        (5, 3)
    ]

    # The gauges the alert rules read.
    service.ctx.refresh_quota_gauges(day1)
    metrics = service.client.get("/metrics").text
    assert "notify_email_quota_used 5.0" in metrics
    assert "notify_email_quota_limit 5.0" in metrics
    assert "notify_email_quota_remaining 0.0" in metrics

    # The deferred users get new notifications; the next day's run merges both.
    kafka.notify(*(notification(u, title=f"second for {u}") for u in deferred))
    wait_until(lambda: db.items("pending") == 6, what="old and new notifications held")
    summary = run_digest(quota, day1 + timedelta(days=1))
    assert (summary["sent"], summary["deferred"]) == (3, 0)
    for u in deferred:
        (mail,) = mails_to(sink, f"{u}@mail.example.test")
        assert f"first for {u}" in text_of(mail) and f"second for {u}" in text_of(mail)
        assert mail.message["Subject"] == "Notify: 2 new notifications"
    for u in got:
        assert len(mails_to(sink, f"{u}@mail.example.test")) == 1
    assert db.items("pending") == 0

    # Day two stayed under 80 %: still the three alerts of day one (a run returns only
    # after its alerts were delivered).
    assert len(webhook.bodies) == 3


def test_critical_mail_over_the_hourly_limit_is_folded_into_the_digest(
    start_service: Callable[..., Any],
    sink: MailSink,
    kafka: Kafka,
    db: Db,
) -> None:
    service = start_service(email_rate_limit_per_hour=2)
    kafka.users(user("frank"))
    wait_until(lambda: db.known_users() == 1, what="the directory view")
    alerts = [notification("frank", title=f"alert {i}", critical=True) for i in range(3)]
    for n in alerts:  # one by one, so "the third" is well defined
        kafka.notify(n)
        wait_until(
            lambda n=n: (
                db.scalar(
                    "SELECT state FROM email_items WHERE notification_id = :id",
                    id=n.notification_id,
                )
                in ("sent", "pending")
            ),
            what="the alert handled",
        )
    mails = mails_to(sink, "frank@mail.example.test")
    assert [m.message["Subject"] for m in mails] == ["[Notify] alert 0", "[Notify] alert 1"]
    assert db.items("pending") == 1  # the third waits for the digest

    summary = run_digest(service.settings, next_digest_time())
    assert summary["sent"] == 1
    digest = mails_to(sink, "frank@mail.example.test")[-1]
    assert "alert 2" in text_of(digest) and "alert 0" not in text_of(digest)
    deferred = [o for o in kafka.outcomes(expect=4) if o["outcome"] == "deferred"]
    assert [o["notification_id"] for o in deferred] == [str(alerts[2].notification_id)]
    assert "folded into the daily digest" in deferred[0]["reason"]
