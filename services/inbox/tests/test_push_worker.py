"""The push service worker (static/push/sw.js), run under Node with the browser APIs it uses
replaced by recorders: what a push shows, what a click opens, duplicates shown once.
Skipped where Node is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[1] / "src" / "notify_inbox" / "static" / "push"

HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const shown = [], focused = [], opened = [], navigated = [];
const listeners = {};
let windows = [];
const self = {
  location: { origin: "https://notify.example" },
  addEventListener: (type, fn) => { listeners[type] = fn; },
  skipWaiting: () => Promise.resolve(),
  registration: {
    showNotification: async (title, options) => { shown.push({ title, options }); },
    getNotifications: async ({ tag }) =>
      shown.filter((n) => n.options.tag === tag).map((n) => ({ data: n.options.data })),
  },
  clients: {
    claim: () => Promise.resolve(),
    matchAll: async () => windows,
    openWindow: async (url) => { opened.push(url); },
  },
};
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), { self, URL, console, Date });

async function dispatch(type, event) {
  let wait = Promise.resolve();
  event.waitUntil = (p) => { wait = p; };
  listeners[type](event);
  await wait;
}
const push = (message) => ({ data: { json: () => message, text: () => JSON.stringify(message) } });

(async () => {
  const message = JSON.parse(process.argv[3]);
  await dispatch("push", push(message));
  await dispatch("push", push(message));  // delivered twice (at least once): shown once
  await dispatch("push", { data: { json: () => { throw new Error("x"); }, text: () => "plain" } });
  const click = (data, action) => ({ action, notification: { data, close: () => {} } });
  // No tab open: a new one at the URL.
  await dispatch("notificationclick", click(message.data));
  // A tab already there: focused.
  windows = [{
    url: "https://notify.example/servers/s/channels/c",
    focus: async () => focused.push("exact"),
  }];
  await dispatch("notificationclick", click(message.data));
  // Another tab of the site: navigated there and focused.
  windows = [{
    url: "https://notify.example/app/",
    focus: async () => focused.push("navigated"),
    navigate: async (url) => { navigated.push(url); return null; },
  }];
  await dispatch("notificationclick", click(message.data));
  console.log(JSON.stringify({ shown, focused, opened, navigated }));
})();
"""

MESSAGE = {
    "title": "New message in Srv #c",
    "body": "Alice: hi",
    "icon": "/app/push/icon-192.png",
    "badge": "/app/push/badge-72.png",
    "data": {
        "url": "/servers/s/channels/c",
        "notification_id": "3b0f7a9e-6f0c-5d1e-9c44-1f2a3b4c5d6e",
        "type": "MENTION",
        "timestamp": 1795300000000,
    },
    "requireInteraction": True,
    "tag": "notification:3b0f7a9e-6f0c-5d1e-9c44-1f2a3b4c5d6e",
    "renotify": True,
}


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the service worker is not exercised")
    return found


def run_worker(node: str, tmp_path: Path) -> dict:
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    out = subprocess.run(
        [node, str(harness), str(STATIC / "sw.js"), json.dumps(MESSAGE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def test_a_push_is_shown_once_with_everything_the_payload_asks(node, tmp_path):
    result = run_worker(node, tmp_path)
    first, fallback = result["shown"]  # the duplicate was not shown again
    assert first["title"] == MESSAGE["title"]
    options = first["options"]
    assert options["body"] == "Alice: hi"
    assert options["icon"] == MESSAGE["icon"] and options["badge"] == MESSAGE["badge"]
    assert options["tag"] == MESSAGE["tag"] and options["renotify"] is True
    assert options["requireInteraction"] is True
    assert options["data"] == MESSAGE["data"]
    assert options["timestamp"] == MESSAGE["data"]["timestamp"]
    assert options["actions"] == [{"action": "open", "title": "Open"}]
    # A payload that is not JSON is still shown (every push must show something).
    assert fallback["title"] == "Notify" and fallback["options"]["body"] == "plain"
    assert "renotify" not in fallback["options"]  # never without a tag


def test_a_click_focuses_or_opens_the_notifications_url(node, tmp_path):
    result = run_worker(node, tmp_path)
    assert result["opened"] == ["https://notify.example/servers/s/channels/c"]
    assert result["navigated"] == ["https://notify.example/servers/s/channels/c"]
    assert result["focused"] == ["exact", "navigated"]


def test_the_page_script_parses_and_exposes_its_api(node, tmp_path):
    probe = tmp_path / "probe.js"
    probe.write_text(
        """
const fs = require("fs"), vm = require("vm");
const window = { isSecureContext: true };
const source = fs.readFileSync(process.argv[2], "utf8");
vm.runInNewContext(source, { window, navigator: {}, self: window });
const api = window.NotifyPush.create({ token: () => "t" });
console.log(JSON.stringify({ supported: window.NotifyPush.supported(), keys: Object.keys(api) }));
"""
    )
    out = subprocess.run(
        [node, str(probe), str(STATIC / "push.js")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    got = json.loads(out.stdout)
    # No service workers or PushManager here: it degrades instead of failing.
    assert got["supported"] is False
    assert got["keys"] == ["supported", "state", "subscribe", "unsubscribe", "refresh"]
