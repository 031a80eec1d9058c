"""Several email-digest processes and crashes: claims keep the digest to one per user and
day, and a run killed with SIGKILL loses nothing when run again."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_common.testing.infra import free_port
from notify_email_digest.sink import MailSink
from notify_email_digest.testing import (
    Db,
    Kafka,
    finish,
    next_digest_time,
    notification,
    run_digest_process,
    text_of,
    user,
    wait_until,
)

pytestmark = pytest.mark.integration

OUTPUT = Path(__file__).resolve().parents[3] / "test-output" / "email-digest" / "replicas"


def _prepare(start_service: Callable[..., Any], kafka: Kafka, db: Db, count: int) -> list[str]:
    """`count` users with two notifications each, held for the digest, then the in-process
    service stopped: from here on only the run-digest processes act."""
    service = start_service()
    users = [f"r{i:02d}" for i in range(count)]
    kafka.users(*(user(u) for u in users))
    wait_until(lambda: db.known_users() == count, what="the directory view")
    kafka.notify(*(notification(u, title=f"{u} {k}") for u in users for k in ("a", "b")))
    wait_until(lambda: db.items("pending") == 2 * count, what="notifications held")
    service.stop()
    return users


def _per_user(sink: MailSink) -> Counter[str]:
    return Counter(rcpt for m in sink.snapshot() for rcpt in m.rcpt_tos)


def test_two_processes_running_the_same_digest_run_send_one_digest_per_user(
    start_service: Callable[..., Any], env: dict[str, str], kafka: Kafka, db: Db
) -> None:
    users = _prepare(start_service, kafka, db, 12)
    # A slow server keeps both runs busy at the same time.
    with MailSink(port=free_port(), delay_s=0.15) as slow:
        run_env = {**env, "NOTIFY_SMTP_URL": slow.url}
        now = next_digest_time()
        a = run_digest_process(run_env, now, log=OUTPUT / "concurrent-a.log")
        b = run_digest_process(run_env, now, log=OUTPUT / "concurrent-b.log")
        first, second = finish(a), finish(b)
        per_user = _per_user(slow)

    assert per_user == {f"{u}@mail.example.test": 1 for u in users}
    assert first["sent"] + second["sent"] == len(users)
    for mail in slow.snapshot():
        u = mail.rcpt_tos[0].split("@")[0]
        assert f"{u} a" in text_of(mail) and f"{u} b" in text_of(mail)
    assert db.items("pending") == 0
    assert db.items("sent") == 2 * len(users)


@pytest.mark.reliability
def test_a_run_killed_mid_way_loses_nothing_and_repeats_at_most_the_mail_in_flight(
    start_service: Callable[..., Any], env: dict[str, str], kafka: Kafka, db: Db
) -> None:
    users = _prepare(start_service, kafka, db, 8)
    # The server keeps each mail, then takes a while to say so: a kill lands in that window.
    with MailSink(port=free_port(), delay_s=0.5) as slow:
        run_env = {**env, "NOTIFY_SMTP_URL": slow.url, "NOTIFY_EMAIL_LEASE_S": "30"}
        now = next_digest_time()
        proc = run_digest_process(run_env, now, log=OUTPUT / "killed.log")
        wait_until(lambda: len(slow.snapshot()) >= 3, timeout=60, what="three digests sent")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = len(slow.snapshot())
        assert before < len(users), "the run finished before it could be killed"

        # The same run again at once: the dead run's claim still holds its lease, so the
        # digest it was sending is not sent a second time yet; the others go out.
        finish(run_digest_process(run_env, now, log=OUTPUT / "rerun.log"))
        assert max(_per_user(slow).values()) == 1
        # Once the lease has run out, the claim is taken over and that digest is sent.
        summary = finish(
            run_digest_process(run_env, now + timedelta(seconds=31), log=OUTPUT / "after-lease.log")
        )
        time.sleep(0.2)
        per_user = _per_user(slow)
        mails = slow.snapshot()

    assert set(per_user) == {f"{u}@mail.example.test" for u in users}, "a digest was lost"
    doubled = [rcpt for rcpt, n in per_user.items() if n > 1]
    # Only the digest the server had accepted when the run died can be repeated, and the
    # repeat carries the same Message-ID, so mail clients show it once.
    assert len(doubled) <= 1 and all(per_user[r] == 2 for r in doubled)
    # The run after the lease sent the dead run's claimed digest (if it had claimed one).
    assert len(doubled) <= summary["sent"] <= 1
    for rcpt in doubled:
        ids = {m.message["Message-ID"] for m in mails if rcpt in m.rcpt_tos}
        assert len(ids) == 1
    assert db.items("pending") + db.items("digesting") == 0
    assert db.items("sent") == 2 * len(users)
    assert db.scalar("SELECT count(*) FROM email_digests WHERE state <> 'sent'") == 0
