"""Dead-lettered, fixed, requeued: an announcement the deployer's broken template cannot
render goes to the DLQ; after the template is fixed and the fanout restarted, an operator
requeues it through the admin API and every recipient gets it once — and requeueing it
again changes nothing."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import OUTPUT, Stack, wait_until
from tests.reliability.conftest import Report

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

TEMPLATES = OUTPUT / "reliability" / "requeue-templates"
TEMPLATES.mkdir(parents=True, exist_ok=True)
BROKEN = 'title: "{{ title }}"\nbody: "{{ body }} - see {{ action_url }}"\n'
FIXED = 'title: "{{ title }}"\nbody: "{{ body }}"\nurl: "{{ action_url }}"\n'
(TEMPLATES / "ADMIN_ANNOUNCEMENT.en.yaml").write_text(BROKEN)
STACK_ENV = {"NOTIFY_TEMPLATES_DIR": str(TEMPLATES)}
USERS = ["rq-a", "rq-b", "rq-c"]


def announcements(stack: Stack, uid: str) -> list[dict]:
    with stack.user(uid) as c:
        items = c.get("/v1/notifications", params={"limit": 50}).json()["items"]
    return [n for n in items if n["metadata"].get("announcement_id") == "rq-1"]


def test_a_dead_letter_requeued_after_the_fix_is_delivered_once(stack: Stack, report: Report):
    with stack.ingest() as ingest:
        for uid in USERS:
            r = ingest.put(f"/v1/users/{uid}", json={"display_name": uid, "entitled": True})
            assert r.status_code == 202, r.text
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_table_entries", 'table="users"') == 3,
        timeout=60,
        what="users in the fanout",
    )
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/announcements",
            json={"announcement_id": "rq-1", "title": "Heads up", "body": "B", "user_ids": USERS},
        )
        assert r.status_code == 202, r.text

    admin = stack.user("rq-operator", admin=True)

    def dead() -> list[dict]:
        page = admin.get("/v1/admin/dlq", params={"error_class": "TemplateError"})
        assert page.status_code == 200, page.text
        return page.json()["items"]

    wait_until(lambda: len(dead()) == 1, timeout=60, what="the dead letter in the admin API")
    [entry] = dead()
    assert "'action_url' has no value" in entry["reason"]
    assert all(announcements(stack, u) == [] for u in USERS), "nobody got a half-rendered one"

    # The deployer fixes the template; the fanout reads templates at start.
    (TEMPLATES / "ADMIN_ANNOUNCEMENT.en.yaml").write_text(FIXED)
    port = stack.procs["fanout"].port
    assert stack.procs["fanout"].stop() == 0
    stack.start("fanout", port).wait_ready(timeout=120)

    first = admin.post(f"/v1/admin/dlq/{entry['id']}/requeue")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "requeued"
    wait_until(
        lambda: all(len(announcements(stack, u)) == 1 for u in USERS),
        timeout=60,
        what="the requeued announcement in every feed",
    )
    again = admin.post(f"/v1/admin/dlq/{entry['id']}/requeue")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "already_requeued"
    time.sleep(3)  # a second publication would have arrived by now
    feeds = {u: announcements(stack, u) for u in USERS}
    received = sum(len(v) for v in feeds.values())
    report.record(
        "in_app (feed)",
        sent=len(USERS),
        received=received,
        duplicates=received - sum(1 for v in feeds.values() if v),
        lost=sum(1 for v in feeds.values() if not v),
        note="dead-lettered (template), fixed, requeued twice",
    )
    assert all(len(v) == 1 for v in feeds.values())
    assert all(v[0]["body"] == "B" for v in feeds.values())
    admin.close()
