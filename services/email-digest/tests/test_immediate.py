"""Immediate mail through the real service process: critical notifications arrive at once,
everything else waits for the digest; the quota never holds critical mail back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from notify_common.testing.infra import free_port
from notify_common.testing.processes import SERVICES, ServiceProcess
from notify_email_digest.sink import MailSink
from notify_email_digest.testing import (
    Db,
    Kafka,
    finish,
    mails_to,
    next_digest_time,
    notification,
    parts,
    run_digest_process,
    text_of,
    user,
    wait_until,
)

pytestmark = pytest.mark.integration

OUTPUT = Path(__file__).resolve().parents[3] / "test-output" / "email-digest"


def test_critical_mail_goes_out_at_once_even_at_quota_zero_and_the_rest_waits(
    env: dict[str, str], sink: MailSink, kafka: Kafka, db: Db
) -> None:
    # The service as operators run it, with a quota of 0: no digest may go out today.
    service = ServiceProcess(
        SERVICES["email-digest"],
        {**env, "NOTIFY_EMAIL_DAILY_QUOTA": "0"},
        free_port(),
        OUTPUT / "immediate" / "email-digest.log",
    ).start()
    try:
        service.wait_ready(timeout=60)
        kafka.users(user("alice", display_name="Alice"), user("bob"))
        wait_until(lambda: db.known_users() == 2, what="the directory view")

        critical = notification(
            "alice",
            title="Security alert\r\nBcc: x@y",
            body="A new sign-in <b>from</b> Lisbon & Porto",
            critical=True,
            type="SYSTEM",
        )
        waiting = [notification("alice", title="hello alice"), notification("bob")]
        started = time.monotonic()
        kafka.notify(critical, *waiting)

        (mail,) = wait_until(lambda: mails_to(sink, "alice@mail.example.test"), timeout=15)
        assert time.monotonic() - started < 10
        # The envelope names only Alice: a "Bcc:" smuggled into the title added no one.
        assert mail.rcpt_tos == ["alice@mail.example.test"]
        assert mail.mail_from == "notify@example.test"
        message = mail.message
        assert message["Subject"] == "[Notify] Security alert Bcc: x@y"
        assert message["Bcc"] is None
        assert message["To"] == "Alice <alice@mail.example.test>"
        assert message["From"] == "Notify <notify@example.test>"
        assert message["Message-ID"] == f"<{critical.notification_id}@example.test>"
        assert message["Date"] is not None
        assert message["List-Unsubscribe"] is None  # critical mail is not a list
        body = parts(message)
        assert set(body) == {"text/plain", "text/html"}
        assert "A new sign-in <b>from</b> Lisbon & Porto" in body["text/plain"]
        assert "A new sign-in &lt;b&gt;from&lt;/b&gt; Lisbon &amp; Porto" in body["text/html"]
        assert "https://chat.example.test/servers/s-demo/channels/general" in body["text/html"]

        # The other two were consumed and are held for the digest, not mailed.
        wait_until(lambda: db.items("pending") == 2, what="two notifications held")
        time.sleep(1.0)
        assert len(sink.snapshot()) == 1

        outcomes = kafka.outcomes(expect=3)
        by_id = {(o["notification_id"], o["outcome"]) for o in outcomes}
        assert (str(critical.notification_id), "sent") in by_id
        for n in waiting:
            assert (str(n.notification_id), "deferred") in by_id
        assert all(o["channel"] == "email" for o in outcomes)

        # Counted against today's quota although it bypassed it.
        assert db.rows("SELECT used, immediate, quota_limit FROM email_quota_days") == [(1, 1, 0)]
        metrics = httpx.get(service.url + "/metrics", timeout=5).text
        assert 'notify_email_sent_total{kind="immediate"} 1.0' in metrics
        assert "notify_email_quota_limit 0.0" in metrics

        # The digest run at quota 0 sends nothing (deferred)...
        now = next_digest_time()
        log = OUTPUT / "immediate" / "run-digest.log"
        summary = finish(run_digest_process(env, now, log=log, NOTIFY_EMAIL_DAILY_QUOTA="0"))
        assert (summary["sent"], summary["deferred"]) == (0, 2)
        assert len(sink.snapshot()) == 1
        # ...and with quota, the next day's run sends each user their own.
        summary = finish(run_digest_process(env, next_digest_time(days=2), log=log))
        assert summary["sent"] == 2
        alice = [m for m in mails_to(sink, "alice@mail.example.test") if m is not mail]
        (bob,) = mails_to(sink, "bob@mail.example.test")
        assert len(alice) == 1
        assert "hello alice" in text_of(alice[0])
        assert "hello alice" not in text_of(bob)
    finally:
        assert service.stop() == 0, service.tail()
