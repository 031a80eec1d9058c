"""The notification center in a real browser (Debian's headless chromium, driven by
Playwright), on the whole stack: messages posted to ingest appear on the open page without
a reload, the bell counts what is unread, read state follows across tabs, hostile content
stays text, and the page falls back to polling when the stream is gone."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import OUTPUT, Stack, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
STACK_SERVICES = ("ingest", "inbox", "fanout", "realtime")
SERVER = "srv-web"
USER = "web-alice"
XSS = "<img src=x onerror=alert(1)>"
UNREAD = re.compile(r"\bunread\b")
SHOTS = OUTPUT / "e2e" / "test_browser"

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; "
        "`make test` does it through `make tools`)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def directory(stack: Stack) -> Stack:
    with stack.ingest() as ingest:
        for uid in (USER, "web-sender"):
            r = ingest.put(f"/v1/users/{uid}", json={"display_name": uid, "entitled": True})
            assert r.status_code == 202, r.text
            r = ingest.put(f"/v1/servers/{SERVER}/members/{uid}", json={"server_name": "Web"})
            assert r.status_code == 202, r.text
    wait_until(
        lambda: stack.metric("fanout", "notify_fanout_table_entries", 'table="members"') == 2,
        timeout=60,
        what="members in the fanout",
    )
    return stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # Debian's chromium, never a downloaded browser build.
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def post(stack: Stack, content: str) -> None:
    with stack.ingest() as ingest:
        r = ingest.post(
            "/v1/messages",
            json={
                "message_id": f"web-{uuid.uuid4().hex[:10]}",
                "server_id": SERVER,
                "channel_id": "general",
                "sender_id": "web-sender",
                "sender_name": "Sender",
                "content": content,
            },
        )
        assert r.status_code == 202, r.text


class Tab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, stack: Stack) -> Tab:
        self.page.goto(f"{stack.url('inbox')}/app/dev-login?user_id={USER}")
        expect(self.page.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
        assert "#token" not in self.page.url  # the token left the address bar
        return self

    def item(self, text: str):
        return self.page.locator("#list li.item", has_text=text)

    def badge(self):
        return self.page.locator("#badge")


def test_a_posted_message_appears_live_and_read_state_follows_across_tabs(
    directory: Stack, browser: Browser
):
    stack = directory
    context = browser.new_context(viewport={"width": 900, "height": 900})
    first = Tab(context.new_page()).open(stack)
    expect(first.badge()).to_be_hidden()
    first.page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    post(stack, "Hello from the browser test")
    expect(first.item("Hello from the browser test")).to_be_visible(timeout=15_000)
    expect(first.badge()).to_have_text("1")

    post(stack, XSS)
    hostile = first.item(XSS)
    expect(hostile).to_be_visible(timeout=15_000)
    expect(first.badge()).to_have_text("2")
    # Rendered as the characters it is made of: no element injected, nothing run.
    expect(hostile.locator(".body")).to_have_text(f"Sender: {XSS}")
    assert first.page.locator("#list img").count() == 0
    first.page.wait_for_timeout(500)
    assert first.dialogs == []
    assert first.page.evaluate("window.__sameDocument") is True  # no reload happened

    second = Tab(context.new_page()).open(stack)
    expect(second.item("Hello from the browser test")).to_have_class(UNREAD)
    expect(second.badge()).to_have_text("2")

    first.item("Hello from the browser test").click()
    expect(first.badge()).to_have_text("1")
    expect(first.item("Hello from the browser test")).not_to_have_class(UNREAD)
    # The other tab learns it from the stream (inbox outbox -> read-state topic -> realtime).
    expect(second.item("Hello from the browser test")).not_to_have_class(UNREAD, timeout=15_000)
    expect(second.badge()).to_have_text("1")

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "notification-center.png"
    first.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    second.page.locator("#mark-all").click()
    expect(second.badge()).to_be_hidden()
    expect(first.badge()).to_be_hidden(timeout=15_000)
    expect(first.page.locator("#list li.unread")).to_have_count(0)

    for i in range(10):
        post(stack, f"burst {i}")
    expect(first.badge()).to_have_text("9+", timeout=20_000)
    expect(first.page.locator("#list li.item")).to_have_count(12)
    assert first.dialogs == second.dialogs == []
    assert first.errors == second.errors == []
    context.close()


def test_the_list_scrolls_through_the_whole_feed(directory: Stack, browser: Browser):
    stack = directory
    page = Tab(browser.new_page(viewport={"width": 900, "height": 700})).open(stack).page
    post_count = 25
    for i in range(post_count):
        post(stack, f"scroll {i}")
    expect(page.locator("#list li.item", has_text="scroll 24")).to_be_visible(timeout=20_000)

    def stored() -> bool:  # the stream can be ahead of the feed; wait for the feed
        with stack.user(USER) as c:
            return "scroll 24" in c.get("/v1/notifications", params={"limit": 1}).text

    wait_until(stored, timeout=20, what="the inbox to store every notification")
    page.reload()  # start from the feed alone: 20 per page, the rest on scrolling
    expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(page.locator("#list li.item")).to_have_count(20)
    deadline = time.monotonic() + 20
    while page.locator("#list li.item").count() < 12 + post_count:
        assert time.monotonic() < deadline, "infinite scroll did not load the older pages"
        page.mouse.wheel(0, 5000)
        page.wait_for_timeout(200)
    expect(page.locator("#list li.item", has_text="Hello from the browser test")).to_have_count(1)
    page.close()


def test_a_mark_read_button_link_marks_the_notification_read(directory: Stack, browser: Browser):
    """Push and email buttons with an API action open /app/?mark_read=<id>; the page
    performs it with its token and drops the parameter from the address."""
    stack = directory
    post(stack, "read me from a button")

    def notification() -> dict | None:
        with stack.user(USER) as c:
            for n in c.get("/v1/notifications", params={"limit": 20}).json()["items"]:
                if "read me from a button" in n["body"]:
                    return n
        return None

    wait_until(lambda: notification() is not None, timeout=30, what="the notification")
    n = notification()
    assert n is not None and n["read_at"] is None
    tab = Tab(browser.new_page()).open(stack)
    tab.page.goto(f"{stack.url('inbox')}/app/?mark_read={n['notification_id']}")
    expect(tab.page.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
    wait_until(
        lambda: (notification() or {}).get("read_at") is not None,
        timeout=20,
        what="the button's mark-read to reach the feed",
    )
    assert "mark_read" not in tab.page.url
    expect(tab.item("read me from a button")).not_to_have_class(UNREAD)
    assert not tab.errors
    tab.page.close()


def test_the_page_polls_while_the_stream_is_unavailable(directory: Stack, browser: Browser):
    stack = directory
    page = Tab(browser.new_page()).open(stack).page
    stack.procs["realtime"].stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "polling", timeout=20_000)
    post(stack, "delivered by polling")
    expect(page.locator("#list li.item", has_text="delivered by polling")).to_be_visible(
        timeout=20_000
    )
    # The browser keeps trying the stream meanwhile; the page keeps saying it polls.
    page.wait_for_timeout(4000)
    expect(page.locator("#status")).to_have_attribute("data-state", "polling", timeout=100)
    page.close()
