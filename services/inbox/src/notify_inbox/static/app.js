// The notification center: the feed through the inbox's cursor API, live updates through
// the realtime SSE stream, and polling while the stream is unavailable.
//
// Safety rules of this file (the page's CSP allows no other script): every text from a
// notification goes in with textContent, never as HTML; action URLs become links only when
// they are same-origin paths.
"use strict";

(() => {
  const PAGE_SIZE = 20;
  const POLL_MS = 5000;
  // How long the stream may be reconnecting on its own before the page polls meanwhile.
  const STREAM_GRACE_MS = 6000;
  const REOPEN_MAX_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $("list"),
    badge: $("badge"),
    bell: $("bell"),
    panel: $("panel"),
    status: $("status"),
    markAll: $("mark-all"),
    pushToggle: $("push-toggle"),
    empty: $("empty"),
    sentinel: $("sentinel"),
    signedOut: $("signed-out"),
    error: $("error"),
  };

  const state = {
    token: null,
    realtimeUrl: null,
    items: new Map(), // notification_id -> {data, el}
    cursor: null,
    exhausted: false,
    loading: false,
    unread: 0,
    stream: null,
    streamDownSince: null,
    reopenTimer: null,
    reopenDelay: 1000,
    pollTimer: null,
  };

  class SignedOut extends Error {}

  // ---- token ------------------------------------------------------------------------
  function takeToken() {
    // The fragment never reaches a server; keep the token for this tab and drop it from
    // the address bar (and so from history and bookmarks).
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem("notify.token", decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("notify.token");
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (options.body) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { ...options, headers });
    if (res.status === 401) {
      signOut();
      throw new SignedOut();
    }
    if (!res.ok) throw new Error(`${options.method || "GET"} ${path}: HTTP ${res.status}`);
    return res.json();
  }

  function signOut() {
    closeStream();
    stopPolling();
    sessionStorage.removeItem("notify.token");
    ui.signedOut.hidden = false;
    setStatus("offline", "signed out");
  }

  // ---- rendering --------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // A same-origin path ("/servers/1/channels/2"), or null: no other scheme, no other host
  // ("//evil.example", "/\\evil.example" and "javascript:" all fail).
  function safePath(url) {
    if (typeof url !== "string" || !url.startsWith("/") || url.startsWith("//") || url.startsWith("/\\")) {
      return null;
    }
    try {
      const parsed = new URL(url, location.origin);
      return parsed.origin === location.origin ? parsed.pathname + parsed.search + parsed.hash : null;
    } catch {
      return null;
    }
  }

  function formatTime(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return "";
    const seconds = Math.round((Date.now() - when.getTime()) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return when.toLocaleDateString();
  }

  function render(n) {
    const li = el("li", "item");
    li.dataset.id = n.notification_id;
    const when = el("time", "when", formatTime(n.created_at));
    when.dateTime = n.created_at;
    const meta = el("div", "meta");
    if (n.metadata && n.metadata.sender_name) meta.append(el("span", "sender", n.metadata.sender_name));
    const path = safePath(n.action_url);
    if (path) {
      const open = el("a", "open", "Open");
      open.href = path;
      meta.append(open);
    }
    li.append(el("span", "dot"), el("span", "title", n.title), when, el("div", "body", n.body), meta);
    li.addEventListener("click", () => markRead(n.notification_id));
    return li;
  }

  function add(n, { top = false, fresh = false } = {}) {
    const known = state.items.get(n.notification_id);
    if (known) {
      setRead(n.notification_id, n.read);
      return false;
    }
    const li = render(n);
    state.items.set(n.notification_id, { data: n, el: li });
    li.classList.toggle("unread", !n.read);
    if (top) {
      ui.list.prepend(li);
      if (fresh) li.classList.add("fresh");
    } else {
      ui.list.append(li);
    }
    ui.empty.hidden = true;
    return true;
  }

  function setRead(id, read) {
    const item = state.items.get(id);
    if (!item) return;
    item.data.read = read;
    item.el.classList.toggle("unread", !read);
  }

  function setBadge(count) {
    state.unread = Math.max(0, count);
    ui.badge.hidden = state.unread === 0;
    ui.badge.textContent = state.unread > 9 ? "9+" : String(state.unread);
    ui.bell.setAttribute("aria-label", `Notifications, ${state.unread} unread`);
    document.title = state.unread ? `(${ui.badge.textContent}) Notifications · Notify` : "Notifications · Notify";
  }

  function setStatus(key, text) {
    ui.status.dataset.state = key;
    ui.status.textContent = text;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function newestId() {
    const first = ui.list.firstElementChild;
    return first ? first.dataset.id : null;
  }

  // ---- the feed (cursor pagination, newest first) ---------------------------------------
  async function loadMore() {
    if (state.loading || state.exhausted || !state.token) return;
    state.loading = true;
    try {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (state.cursor) query.set("cursor", state.cursor);
      const page = await api(`/v1/notifications?${query}`);
      for (const n of page.items) add(n);
      state.cursor = page.next_cursor;
      state.exhausted = !page.next_cursor;
      ui.empty.hidden = state.items.size > 0;
    } finally {
      state.loading = false;
    }
    // A short page may leave the end of the list on screen: the observer will not fire
    // again for it, so keep loading while it shows.
    if (!state.exhausted && ui.sentinel.getBoundingClientRect().top < window.innerHeight) {
      await loadMore();
    }
  }

  async function refreshCount() {
    setBadge((await api("/v1/notifications/unread-count")).unread);
  }

  // The newest page, merged in (oldest first, so the newest ends on top): the polling step.
  async function refreshTop() {
    const page = await api(`/v1/notifications?limit=${PAGE_SIZE}`);
    for (const n of [...page.items].reverse()) add(n, { top: true, fresh: true });
    await refreshCount();
  }

  // Start over: the stream said this page fell too far behind to be caught up event by event.
  async function reload() {
    state.items.clear();
    ui.list.replaceChildren();
    state.cursor = null;
    state.exhausted = false;
    await loadMore();
    await refreshCount();
  }

  // ---- read state -------------------------------------------------------------------------
  async function markRead(id) {
    const item = state.items.get(id);
    if (!item || item.data.read) return;
    setRead(id, true);
    setBadge(state.unread - 1);
    try {
      await api(`/v1/notifications/${encodeURIComponent(id)}`, {
        method: "PATCH",
        body: JSON.stringify({ read: true }),
      });
    } catch (err) {
      if (err instanceof SignedOut) return;
      setRead(id, false);
      setBadge(state.unread + 1);
      showError("Could not mark it read; try again.");
    }
  }

  async function markAllRead() {
    const unread = [...state.items.values()].filter((i) => !i.data.read).map((i) => i.data.notification_id);
    for (const id of unread) setRead(id, true);
    const before = state.unread;
    setBadge(0);
    try {
      await api("/v1/notifications/mark-all-read", { method: "POST" });
    } catch (err) {
      if (err instanceof SignedOut) return;
      for (const id of unread) setRead(id, false);
      setBadge(before);
      showError("Could not mark everything read; try again.");
    }
  }

  // ---- live updates -------------------------------------------------------------------------
  function openStream() {
    if (!state.realtimeUrl || state.stream || !state.token) return;
    const query = new URLSearchParams({ token: state.token });
    // Resume after the newest notification shown: the stream replays anything newer that
    // the feed page did not have, then goes live, with no gap.
    const last = newestId();
    if (last) query.set("last_event_id", last);
    const es = new EventSource(`${state.realtimeUrl}/v1/stream?${query}`);
    state.stream = es;
    es.addEventListener("open", () => {
      state.streamDownSince = null;
      state.reopenDelay = 1000;
      stopPolling();
      showError("");
      setStatus("live", "live");
    });
    es.addEventListener("notification", (event) => {
      const n = JSON.parse(event.data);
      if (add(n, { top: true, fresh: true }) && !n.read) setBadge(state.unread + 1);
    });
    es.addEventListener("read", (event) => {
      const change = JSON.parse(event.data);
      if (change.scope === "all") {
        for (const id of state.items.keys()) setRead(id, true);
      } else {
        setRead(change.notification_id, change.read);
      }
    });
    es.addEventListener("unread-count", (event) => setBadge(JSON.parse(event.data).unread));
    es.addEventListener("resync", () => {
      closeStream();
      reload()
        .catch(() => startPolling())
        .finally(() => scheduleReopen(0));
    });
    es.addEventListener("error", () => {
      if (state.stream !== es) return;
      if (state.streamDownSince === null) state.streamDownSince = Date.now();
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. 401, 503) or given up: the browser will not retry. Poll now and
        // reopen with backoff.
        closeStream();
        startPolling();
        scheduleReopen(state.reopenDelay);
        return;
      }
      // The browser reconnects on its own (with Last-Event-ID); poll if that takes long.
      // While polling already, the status keeps saying so: each failed attempt lands here.
      if (!state.pollTimer) setStatus("connecting", "reconnecting…");
      setTimeout(() => {
        if (state.streamDownSince !== null && Date.now() - state.streamDownSince >= STREAM_GRACE_MS) {
          startPolling();
        }
      }, STREAM_GRACE_MS);
    });
  }

  function closeStream() {
    if (state.stream) state.stream.close();
    state.stream = null;
  }

  function scheduleReopen(delay) {
    clearTimeout(state.reopenTimer);
    state.reopenTimer = setTimeout(() => {
      state.reopenTimer = null;
      openStream();
    }, delay);
    state.reopenDelay = Math.min(state.reopenDelay * 2, REOPEN_MAX_MS);
  }

  function startPolling() {
    if (state.pollTimer || !state.token) return;
    setStatus("polling", "polling");
    const tick = () =>
      refreshTop()
        .then(() => showError(""))
        .catch((err) => {
          if (!(err instanceof SignedOut)) showError("The notification service is unavailable; retrying.");
        });
    tick();
    state.pollTimer = setInterval(tick, POLL_MS);
  }

  function stopPolling() {
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  // ---- start -----------------------------------------------------------------------------
  // Web Push (push.js): the button shows only where push can work; subscribing asks for
  // permission, so it runs from the click (a user gesture), never on load.
  async function setupPush() {
    if (!window.NotifyPush) return;
    const push = window.NotifyPush.create({ token: () => state.token });
    const show = async () => {
      const current = await push.state();
      ui.pushToggle.hidden = current === "unsupported" || current === "unavailable";
      ui.pushToggle.disabled = current === "denied";
      ui.pushToggle.textContent = current === "subscribed" ? "Disable push"
        : current === "denied" ? "Push blocked" : "Enable push";
      return current;
    };
    ui.pushToggle.addEventListener("click", async () => {
      try {
        if ((await push.state()) === "subscribed") await push.unsubscribe();
        else await push.subscribe();
      } catch (err) {
        showError(String(err.message || err));
      }
      await show();
    });
    if ((await show()) === "subscribed") await push.refresh();
  }

  // A push or email button that performs an API action opens this page with
  // ?mark_read=<notification id>: the service worker and the mail hold no token, the page
  // does. The parameter is removed from the address once read.
  async function linkAction() {
    const params = new URLSearchParams(location.search);
    const id = params.get("mark_read");
    if (!id) return;
    params.delete("mark_read");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    try {
      await api(`/v1/notifications/${encodeURIComponent(id)}`, {
        method: "PATCH",
        body: JSON.stringify({ read: true }),
      });
    } catch (err) {
      if (err instanceof SignedOut) throw err;
      showError("Could not mark it read; try again.");
    }
  }

  async function main() {
    ui.markAll.addEventListener("click", markAllRead);
    ui.bell.addEventListener("click", () => {
      const opening = ui.panel.hidden;
      ui.panel.hidden = !opening;
      ui.bell.setAttribute("aria-expanded", String(opening));
    });
    state.token = takeToken();
    if (!state.token) {
      signOut();
      return;
    }
    try {
      const config = await (await fetch("/app/config.json")).json();
      state.realtimeUrl = config.realtime_url;
      await linkAction();
      await loadMore();
      await refreshCount();
    } catch (err) {
      if (err instanceof SignedOut) return;
      showError("The notification service is unavailable; retrying.");
      startPolling();
    }
    openStream();
    setupPush().catch(() => {});
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore().catch(() => {});
    }).observe(ui.sentinel);
  }

  main();
})();
