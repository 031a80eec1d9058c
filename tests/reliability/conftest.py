"""The reliability suite's report: every case records what it sent and what arrived where,
and the session writes them to test-output/reliability/report.md and the terminal.

A case calls `report.record(case, channel, sent=…, received=…, duplicates=…, lost=…)`; the
outcome column is the test's own result (passed/failed), filled in after it ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import OUTPUT, Stack, wait_until
from tests.e2e.conftest import stack as stack  # the module-scoped stack fixture, shared

REPORT = OUTPUT / "reliability" / "report.md"


@dataclass
class Row:
    case: str
    channel: str
    sent: int
    received: int
    duplicates: int
    lost: int
    note: str = ""
    outcome: str = "running"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    current: str = ""

    def record(
        self,
        channel: str,
        *,
        sent: int,
        received: int,
        duplicates: int,
        lost: int,
        note: str = "",
    ) -> None:
        self.rows.append(Row(self.current, channel, sent, received, duplicates, lost, note))

    def markdown(self) -> str:
        lines = [
            "| case | channel | sent | received | duplicates | lost | outcome | note |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.case} | {r.channel} | {r.sent} | {r.received} | {r.duplicates} | "
                f"{r.lost} | {r.outcome} | {r.note} |"
            )
        return "\n".join(lines) + "\n"


_report = Report()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Report]:
    _report.current = request.node.name
    first = len(_report.rows)
    yield _report
    rep = getattr(request.node, "rep_call", None)
    outcome = "passed" if rep is not None and rep.passed else "failed"
    for row in _report.rows[first:]:
        row.outcome = outcome
    if first == len(_report.rows):  # the case failed before recording anything
        _report.rows.append(Row(request.node.name, "-", 0, 0, 0, 0, "no counts", outcome))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    if call.when == "call":
        item.rep_call = outcome.get_result()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _report.rows:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("# Reliability suite report\n\n" + _report.markdown(), encoding="utf-8")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if _report.rows:
        terminalreporter.section("reliability report")
        terminalreporter.write(_report.markdown())
        terminalreporter.write_line(f"(written to {Path(REPORT).relative_to(OUTPUT.parent)})")


# --- shared steps of the cases ------------------------------------------------------------


def join(stack: Stack, server: str, users: list[str]) -> None:
    """Entitled users, all members of `server`; waits until the fanout holds them."""
    before = stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
    with stack.ingest() as ingest:
        for uid in users:
            r = ingest.put(f"/v1/users/{uid}", json={"display_name": uid, "entitled": True})
            assert r.status_code == 202, r.text
            r = ingest.put(f"/v1/servers/{server}/members/{uid}", json={})
            assert r.status_code == 202, r.text
    wait_until(
        lambda: (
            stack.metric("fanout", "notify_fanout_table_entries", 'table="members"')
            >= before + len(users)
        ),
        timeout=60,
        what="members in the fanout",
    )


def post_message(stack: Stack, message_id: str, server: str, sender: str) -> tuple[int, str]:
    """POST one message as the upstream app: (status, Retry-After or "")."""
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": message_id,
                "server_id": server,
                "channel_id": "c",
                "sender_id": sender,
                "sender_name": "S",
                "content": f"#{message_id}",
            },
        )
    return r.status_code, r.headers.get("retry-after", "")


def feed_ids(stack: Stack, user_id: str, prefix: str = "") -> list[str]:
    """The message ids in a user's whole feed (every page), repeats included."""
    ids: list[str] = []
    cursor = None
    with stack.user(user_id) as c:
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/notifications", params=params).json()
            ids += [
                mid
                for n in page["items"]
                if (mid := n["metadata"].get("message_id") or "").startswith(prefix)
            ]
            cursor = page["next_cursor"]
            if not cursor:
                return ids


def record_feeds(report: Report, feeds: dict[str, list[str]], expected_each: int, note: str) -> int:
    """Report the feeds' counts; returns the number of duplicates."""
    received = sum(len(set(ids)) for ids in feeds.values())
    duplicates = sum(sum(n - 1 for n in Counter(ids).values()) for ids in feeds.values())
    sent = expected_each * len(feeds)
    report.record(
        "in_app (feed)",
        sent=sent,
        received=received,
        duplicates=duplicates,
        lost=sent - received,
        note=note,
    )
    return duplicates
