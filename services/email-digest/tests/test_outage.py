"""An SMTP server that is down, answers 4xx, or refuses for good (5xx)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from notify_email_digest.main import run_digest
from notify_email_digest.settings import EmailDigestSettings
from notify_email_digest.sink import MailSink, SinkMail
from notify_email_digest.testing import (
    Db,
    Kafka,
    mails_to,
    next_digest_time,
    notification,
    text_of,
    user,
    wait_until,
)
from notify_schemas import topics

pytestmark = pytest.mark.integration


def _attempts(db: Db, notification_id: object) -> int:
    return int(
        db.scalar(
            "SELECT attempts FROM email_items WHERE notification_id = :id", id=notification_id
        )
        or 0
    )


@pytest.mark.reliability
def test_smtp_down_then_up_every_mail_is_retried_and_delivered_once(
    start_service: Callable[..., Any],
    settings: EmailDigestSettings,
    sink: MailSink,
    kafka: Kafka,
    db: Db,
) -> None:
    port = sink.port
    sink.stop()  # the SMTP server is down
    start_service()
    kafka.users(user("erin"))
    wait_until(lambda: db.known_users() == 1, what="the directory view")
    urgent = notification("erin", title="urgent", critical=True)
    later = notification("erin", title="later")
    kafka.notify(urgent, later)

    # The critical mail is retried (backoff capped at 1 s in these tests), not given up.
    wait_until(lambda: _attempts(db, urgent.notification_id) >= 3, what="three attempts")
    # The digest run meets the same outage: the digest is kept for a retry.
    now = next_digest_time()
    summary = run_digest(settings, now)
    assert (summary["sent"], summary["retrying"]) == (0, 1)

    with MailSink(port=port) as back:
        (critical,) = wait_until(lambda: mails_to(back, "erin@mail.example.test"), timeout=15)
        assert "urgent" in text_of(critical)
        summary = run_digest(settings, now + timedelta(seconds=5))
        assert summary["sent"] == 1
        mails = wait_until(lambda: len(back.snapshot()) == 2 and back.snapshot())
    assert "later" in text_of(mails[1]) and "urgent" not in text_of(mails[1])
    assert db.items("sent") == 2

    outcomes = kafka.outcomes(expect=3)
    sent = {o["notification_id"]: o for o in outcomes if o["outcome"] == "sent"}
    assert set(sent) == {str(urgent.notification_id), str(later.notification_id)}
    assert sent[str(urgent.notification_id)]["attempt"] >= 3
    assert not [o for o in outcomes if o["outcome"] == "failed"]


def test_4xx_is_retried_and_5xx_fails_into_the_dlq(
    start_service: Callable[..., Any],
    sink: MailSink,
    kafka: Kafka,
    db: Db,
) -> None:
    answers: dict[str, list[str]] = {
        "greylisted@mail.example.test": ["451 4.7.1 greylisted, try again later"],
        "gone@mail.example.test": ["550 5.1.1 no such mailbox"] * 100,
    }

    def reply(mail: SinkMail) -> str | None:
        queue = answers.get(mail.rcpt_tos[0])
        return queue.pop(0) if queue else None

    sink.reply = reply
    start_service()
    kafka.users(user("greylisted"), user("gone"))
    wait_until(lambda: db.known_users() == 2, what="the directory view")
    grey = notification("greylisted", critical=True, title="for greylisted")
    gone = notification("gone", critical=True, title="for gone")
    kafka.notify(grey, gone)

    (mail,) = wait_until(lambda: mails_to(sink, "greylisted@mail.example.test"), timeout=15)
    assert "for greylisted" in text_of(mail)
    wait_until(lambda: db.items("failed") == 1, what="the refused mail failed")
    assert mails_to(sink, "gone@mail.example.test") == []
    assert _attempts(db, gone.notification_id) == 1  # a 5xx is not retried

    (dead,) = kafka.read(topics.DLQ, expect=1)
    headers = {k: (v or b"").decode() for k, v in dead.headers() or []}
    assert headers["dlq_error_class"] == "EmailFailed"
    assert "550" in headers["dlq_reason"]
    assert headers["dlq_consumer_group"].endswith("notify-email-digest")
    assert dead.value() and str(gone.notification_id).encode() in dead.value()
    failed = [o for o in kafka.outcomes(expect=2) if o["outcome"] == "failed"]
    assert [o["notification_id"] for o in failed] == [str(gone.notification_id)]
    # The refused mail gave its quota unit back: one mail was accepted today.
    assert db.rows("SELECT used, refunded FROM email_quota_days") == [(1, 1)]
