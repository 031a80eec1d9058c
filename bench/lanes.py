"""Priority lanes (docs/decisions/0010-priority-lanes.md): how long a critical notification
takes to reach the push service and the SMTP server, alone and while a 100 000-recipient
announcement is being worked off by the same services.

The whole stack runs (tests/e2e/fullstack.py: all six services as processes, a decrypting
push receiver, an SMTP sink). The bulk audience is written straight to notify.users.v1 and
addressed by user id (10 announcements of 10 000, the per-announcement limit). Each phase
posts SAMPLES critical announcements, one to each of SAMPLES subscribed users, spaced
SPACING_S apart, and times each from its POST to the push received and the mail received.
A bulk phase posts them once the fanout has emitted the whole bulk, i.e. with all of it
queued in front of the consumers, and reports how many arrived before the bulk drained.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx

from bench.common import Figure
from notify_common.kafka.producer import EventProducer
from notify_common.settings import CommonSettings
from notify_common.testing import infra
from notify_common.testing.pytest_plugin import _make_template
from notify_push_sender.testing import Subscriber
from notify_schemas import envelope, topics
from notify_schemas.models import MAX_ANNOUNCEMENT_USERS, User, notification_id_for
from tests.e2e.conftest import Stack, wait_until
from tests.e2e.fullstack import Full, add_members, email_of, full_stack

BULK = 100_000
SAMPLES = 40
SPACING_S = 0.1
MAX_BULK_RUNS = 2  # a 100 000-recipient run takes minutes on 2 cores


def _write_users(settings: CommonSettings, user_ids: list[str]) -> None:
    producer = EventProducer(settings)
    target = settings.topic(topics.USERS)
    ce_type = topics.topic(topics.USERS).ce_type or ""
    try:
        for uid in user_ids:
            value, headers = envelope.encode(
                User(user_id=uid, display_name=uid, entitled=True), ce_type=ce_type, source="/bench"
            )
            producer.produce(target, key=uid, value=value, headers=headers)
        producer.flush(300)
    finally:
        producer.close()


def _pct(values: list[float], q: int) -> float:
    """Nearest-rank percentile (of SAMPLES values: p99 is the largest but one or the max)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Phase:
    """SAMPLES critical announcements, spaced out; latency to push and to mail of each."""

    def __init__(self, full: Full, vips: dict[str, Subscriber], tag: str) -> None:
        self.full, self.vips, self.tag = full, vips, tag

    def run(self) -> tuple[list[float], list[float], float]:
        full = self.full
        sink = full.sink
        mails_before = {v: len(sink.to(email_of(v))) for v in self.vips}
        posted: dict[str, float] = {}
        want = {v: str(notification_id_for(f"{self.tag}-{v}", v)) for v in self.vips}
        push_at: dict[str, float] = {}
        mail_at: dict[str, float] = {}
        with full.stack.ingest() as ingest:
            for v in self.vips:
                posted[v] = time.monotonic()
                r = ingest.post(
                    "/v1/announcements",
                    json={
                        "announcement_id": f"{self.tag}-{v}",
                        "title": "Security notice",
                        "body": "Your password was changed.",
                        "user_ids": [v],
                        "critical": True,
                    },
                )
                assert r.status_code == 202, r.text
                self._poll(want, push_at, mail_at, mails_before)
                time.sleep(SPACING_S)
        deadline = time.monotonic() + 300
        while (len(push_at) < len(self.vips) or len(mail_at) < len(self.vips)) and (
            time.monotonic() < deadline
        ):
            self._poll(want, push_at, mail_at, mails_before)
            time.sleep(0.01)
        assert len(push_at) == len(mail_at) == len(self.vips), "critical deliveries missing"
        last = max([*push_at.values(), *mail_at.values()])
        return (
            [(push_at[v] - posted[v]) * 1000 for v in self.vips],
            [(mail_at[v] - posted[v]) * 1000 for v in self.vips],
            last,
        )

    def _poll(
        self,
        want: dict[str, str],
        push_at: dict[str, float],
        mail_at: dict[str, float],
        mails_before: dict[str, int],
    ) -> None:
        now = time.monotonic()
        for v, sub in self.vips.items():
            if v not in push_at and any(
                p.message is not None and str(p.message["data"]["notification_id"]) == want[v]
                for p in self.full.receiver.delivered(sub.token)
            ):
                push_at[v] = now
            if v not in mail_at and len(self.full.sink.to(email_of(v))) > mails_before[v]:
                mail_at[v] = now


def _metric(stack: Stack, service: str, name: str, labels: str | None = None) -> float:
    """A metric, or -1 while the service is too busy to answer (the fanout's loop is busy
    for seconds while it fans out 10 000 recipients at a time)."""
    try:
        return stack.metric(service, name, labels)
    except httpx.TimeoutException:
        return -1.0


def _progress(stack: Stack) -> tuple[float, float, float]:
    """Bulk-lane notifications consumed by push-sender and email-digest, rows persisted by
    the inbox (either lane)."""
    return (
        _metric(
            stack, "push-sender", "notify_consumer_messages_total", 'group="notify-push-sender"'
        ),
        _metric(
            stack, "email-digest", "notify_consumer_messages_total", 'group="notify-email-digest"'
        ),
        _metric(stack, "inbox", "notify_inbox_persisted_total"),
    )


def run(
    *, broker: infra.Broker, postgres: infra.Postgres, work: Path, runs: int, **_: object
) -> list[Figure]:
    extra = {
        # Many critical mails to the same few users: no quota or rate limit in the way.
        "NOTIFY_EMAIL_RATE_LIMIT_PER_HOUR": "100000",
        "NOTIFY_EMAIL_DAILY_QUOTA": "1000000",
        "NOTIFY_LOG_LEVEL": "WARNING",
    }
    alone_push = Figure(f"critical alone: POST -> push p50 ({SAMPLES} per run)", "ms")
    alone_push99 = Figure(f"critical alone: POST -> push p99 ({SAMPLES} per run)", "ms")
    alone_mail = Figure(f"critical alone: POST -> mail p50 ({SAMPLES} per run)", "ms")
    alone_mail99 = Figure(f"critical alone: POST -> mail p99 ({SAMPLES} per run)", "ms")
    bulk_push = Figure(f"critical during {BULK:,} bulk: POST -> push p50", "ms")
    bulk_push99 = Figure(f"critical during {BULK:,} bulk: POST -> push p99", "ms")
    bulk_mail = Figure(f"critical during {BULK:,} bulk: POST -> mail p50", "ms")
    bulk_mail99 = Figure(f"critical during {BULK:,} bulk: POST -> mail p99", "ms")
    drain = Figure(f"bulk of {BULK:,}: fanned out -> feed, push and email lanes drained", "ms")
    _make_template(postgres)  # full_stack copies a migrated template database
    with full_stack(broker, postgres, work / "lanes", extra_env=extra) as full:
        stack = full.stack
        settings = CommonSettings(
            kafka_bootstrap=stack.env["NOTIFY_KAFKA_BOOTSTRAP"],
            topic_prefix=stack.env["NOTIFY_TOPIC_PREFIX"],
        )
        vips = add_members(full, "bench-vips", [f"vip-{i:02d}" for i in range(SAMPLES)])
        crowd = [f"bulk-{i:06d}" for i in range(BULK)]
        before = _metric(stack, "fanout", "notify_fanout_table_entries", 'table="users"')
        loading = time.monotonic()
        _write_users(settings, crowd)
        wait_until(
            lambda: (
                _metric(stack, "fanout", "notify_fanout_table_entries", 'table="users"')
                >= before + BULK
            ),
            timeout=900,
            what="the bulk audience in the fanout",
        )
        print(f"  {BULK:,} users in the fanout after {time.monotonic() - loading:.0f} s")
        Phase(full, vips, "warmup").run()  # connections, caches, group joins: discarded
        delivered_before_drain = 0
        bulk_runs = max(1, min(runs, MAX_BULK_RUNS))
        for r in range(bulk_runs):
            push, mail, _last = Phase(full, vips, f"alone{r}").run()
            alone_push.runs.append(statistics.median(push))
            alone_push99.runs.append(_pct(push, 99))
            alone_mail.runs.append(statistics.median(mail))
            alone_mail99.runs.append(_pct(mail, 99))

            emitted = _metric(stack, "fanout", "notify_fanout_recipients_total")
            base = _progress(stack)
            with stack.ingest() as ingest:
                for i in range(0, BULK, MAX_ANNOUNCEMENT_USERS):
                    resp = ingest.post(
                        "/v1/announcements",
                        json={
                            "announcement_id": f"bulk{r}-{i}",
                            "title": "Community update",
                            "body": "Bulk news for everyone.",
                            "user_ids": crowd[i : i + MAX_ANNOUNCEMENT_USERS],
                        },
                    )
                    assert resp.status_code == 202, resp.text

            def fanned_out(e: float = emitted) -> bool:
                return _metric(stack, "fanout", "notify_fanout_recipients_total") >= e + BULK

            wait_until(
                fanned_out,
                timeout=120,
                what="the bulk fanned out",
            )
            fanned = time.monotonic()
            push, mail, last = Phase(full, vips, f"bulk{r}").run()
            bulk_push.runs.append(statistics.median(push))
            bulk_push99.runs.append(_pct(push, 99))
            bulk_mail.runs.append(statistics.median(mail))
            bulk_mail99.runs.append(_pct(mail, 99))

            def drained(base: tuple[float, float, float] = base) -> bool:
                # The bulk lanes' groups, and the feed (the bulk phase's critical rows too).
                return (
                    _progress(stack)[0] >= base[0] + BULK
                    and _progress(stack)[1] >= base[1] + BULK
                    and _progress(stack)[2] >= base[2] + BULK + SAMPLES
                )

            wait_until(drained, timeout=900, what="the bulk drained")
            done = time.monotonic()
            drain.runs.append((done - fanned) * 1000)
            if last < done:
                delivered_before_drain += 1
            print(
                f"  run {r}: bulk drained {done - fanned:.1f} s after it was fanned out; "
                f"critical push p50 {bulk_push.runs[-1]:.0f} ms, mail p50 "
                f"{bulk_mail.runs[-1]:.0f} ms"
            )
    note = (
        f"{SAMPLES} critical announcements per phase, {SPACING_S * 1000:.0f} ms apart, to "
        f"{SAMPLES} subscribed users; with {BULK:,} bulk notifications queued in front "
        "of inbox, push-sender and email-digest (all fanned out before the first critical "
        f"one is posted). In {delivered_before_drain} of {bulk_runs} bulk runs every critical "
        "push and mail arrived before the bulk had drained. Whole stack, broker, PostgreSQL "
        f"and the client on 2 shared cores; {bulk_runs} measured runs (each of {BULK:,} "
        f"takes minutes), p99 of {SAMPLES} samples is close to their maximum"
    )
    bulk_push.note = note
    return [
        alone_push,
        alone_push99,
        alone_mail,
        alone_mail99,
        bulk_push,
        bulk_push99,
        bulk_mail,
        bulk_mail99,
        drain,
    ]
