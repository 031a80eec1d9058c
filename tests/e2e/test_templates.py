"""Templates on the running stack: the recipient's locale picks the shipped template, a
deployer's override folder replaces one, and an event the override cannot render goes to
the DLQ with the reason instead of reaching anyone with a literal placeholder."""

from __future__ import annotations

from pathlib import Path

import pytest

from notify_common.testing.kafka import read_topic
from notify_schemas import topics
from tests.e2e.conftest import Stack, wait_until

pytestmark = pytest.mark.e2e

STACK_ENV = {"NOTIFY_TEMPLATES_DIR": str(Path(__file__).parent / "templates_override")}
SERVER = "tpl-srv"
USERS = {"tpl-fr": "fr-FR", "tpl-en": "en", "tpl-sender": "en"}


def feed(stack: Stack, uid: str) -> list[dict]:
    with stack.user(uid) as c:
        return c.get("/v1/notifications", params={"limit": 50}).json()["items"]


@pytest.fixture(scope="module")
def directory(stack: Stack) -> Stack:
    with stack.ingest() as ingest:
        for uid, locale in USERS.items():
            body = {"display_name": uid, "entitled": True, "locale": locale}
            assert ingest.put(f"/v1/users/{uid}", json=body).status_code == 202
            r = ingest.put(f"/v1/servers/{SERVER}/members/{uid}", json={"server_name": "Guilde"})
            assert r.status_code == 202, r.text
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_table_entries", 'table="members"') == 3,
        timeout=60,
        what="members in the fanout",
    )
    return stack


def test_the_recipients_locale_picks_the_text_and_buttons(directory: Stack):
    stack = directory
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": "tpl-m1",
                "server_id": SERVER,
                "channel_id": "general",
                "sender_id": "tpl-sender",
                "sender_name": "Ada",
                "content": "bonjour   tout le monde",
                "mentions": ["tpl-en"],
            },
        )
        assert r.status_code == 202, r.text
    wait_until(
        lambda: bool(feed(stack, "tpl-fr")) and bool(feed(stack, "tpl-en")),
        timeout=60,
        what="both feeds",
    )
    [fr] = feed(stack, "tpl-fr")
    assert fr["title"] == "Nouveau message dans tpl-srv #general"
    assert fr["body"] == "Ada : bonjour tout le monde"
    [en] = feed(stack, "tpl-en")
    assert en["title"] == "Ada mentioned you in tpl-srv #general"
    assert en["body"] == "bonjour tout le monde"


def test_an_override_replaces_the_shipped_template_and_unrenderable_events_are_dead_lettered(
    directory: Stack,
):
    stack = directory
    with stack.ingest() as ingest:
        for aid, extra in (("tpl-a-ok", {"action_url": "/status"}), ("tpl-a-bad", {})):
            r = ingest.post(
                "/v1/announcements",
                json={
                    "announcement_id": aid,
                    "title": "Maintenance",
                    "body": "Tonight at 2am",
                    "user_ids": ["tpl-fr", "tpl-en"],
                    **extra,
                },
            )
            assert r.status_code == 202, r.text

    def announcements(uid: str) -> list[dict]:
        return [n for n in feed(stack, uid) if n["type"] == "ADMIN_ANNOUNCEMENT"]

    wait_until(
        lambda: all(announcements(u) for u in ("tpl-fr", "tpl-en")),
        timeout=60,
        what="the renderable announcement",
    )
    dlq = [
        m
        for m in read_topic(
            stack.env["NOTIFY_KAFKA_BOOTSTRAP"], stack.env["NOTIFY_TOPIC_PREFIX"] + topics.DLQ, 1
        )
        if dict(m.headers() or []).get("dlq_error_class") == b"TemplateError"
    ]
    assert len(dlq) == 1
    headers = dict(dlq[0].headers() or [])
    assert b"tpl-a-bad" in dlq[0].value()
    assert b"'action_url' has no value" in headers["dlq_reason"]
    for uid in ("tpl-fr", "tpl-en"):
        [n] = announcements(uid)  # the bad one reached nobody
        assert n["title"] == "[Ops] Maintenance"
        assert n["body"] == "Tonight at 2am (details: /status)"
        assert n["action_url"] == "/status"
        assert "{{" not in n["title"] + n["body"]
