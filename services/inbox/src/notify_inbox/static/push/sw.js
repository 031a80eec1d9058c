/* Notify's service worker: shows Web Push messages and opens them.
 *
 * Serve it from the page's own directory (/app/sw.js) or with the response header
 * `Service-Worker-Allowed: /app/`, so that its scope covers the notification center.
 *
 * A push message is the JSON push-sender sends (see services/push-sender/README-push.md):
 *   {title, body, icon, badge, data: {url, notification_id, type, timestamp, actions?},
 *    requireInteraction, tag, renotify, actions?: [{action, title}]}
 */
"use strict";

const DEFAULT_TITLE = "Notify";
// notification ids shown lately: push delivery is at-least-once, so the same message may
// arrive twice; it is shown once. (A worker may be stopped between pushes: the tag check
// below covers what this memory forgets.)
const recent = new Set();
const RECENT_MAX = 200;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function parse(event) {
  if (!event.data) return { title: DEFAULT_TITLE, body: "" };
  try {
    return event.data.json();
  } catch (_) {
    return { title: DEFAULT_TITLE, body: event.data.text() };
  }
}

async function alreadyShown(message) {
  const id = message.data && message.data.notification_id;
  if (!id) return false;
  if (recent.has(id)) return true;
  if (message.tag) {
    const shown = await self.registration.getNotifications({ tag: message.tag });
    if (shown.some((n) => n.data && n.data.notification_id === id)) return true;
  }
  recent.add(id);
  if (recent.size > RECENT_MAX) recent.delete(recent.values().next().value);
  return false;
}

async function show(message) {
  if (await alreadyShown(message)) return;
  const data = message.data || {};
  const options = {
    body: message.body || "",
    icon: message.icon,
    badge: message.badge,
    data,
    requireInteraction: Boolean(message.requireInteraction),
    timestamp: data.timestamp || Date.now(),
    actions: message.actions || [{ action: "open", title: "Open" }],
  };
  // renotify without a tag is an error in browsers: only ever pass them together.
  if (message.tag) {
    options.tag = message.tag;
    options.renotify = message.renotify !== false;
  }
  await self.registration.showNotification(message.title || DEFAULT_TITLE, options);
}

// Every push must show a notification (userVisibleOnly): errors still show the fallback.
self.addEventListener("push", (event) => {
  const message = parse(event);
  event.waitUntil(
    show(message).catch(() =>
      self.registration.showNotification(message.title || DEFAULT_TITLE, {
        body: message.body || "",
      }),
    ),
  );
});

async function open(url) {
  const target = new URL(url || "/", self.location.origin);
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  // A tab already at the URL: focus it.
  for (const client of windows) {
    if (client.url === target.href && "focus" in client) return client.focus();
  }
  // A tab of this site: bring it to the URL (same origin only; navigate() refuses others).
  for (const client of windows) {
    if (new URL(client.url).origin === target.origin && "navigate" in client) {
      try {
        const navigated = await client.navigate(target.href);
        return (navigated || client).focus();
      } catch (_) {
        break; // not controlled by this worker: open a new tab instead
      }
    }
  }
  return self.clients.openWindow(target.href);
}

// A click on the body (or the default "open" button) opens data.url; a click on one of the
// template's buttons opens its target from data.actions (a page, or the notification center
// with ?mark_read=<id>, which performs the action with the user's token).
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  let target = data.url;
  if (event.action && event.action !== "open") {
    target = (data.actions || {})[event.action];
    if (!target) return; // an action this worker does not know
  }
  event.waitUntil(open(target));
});

// The push service replaced or expired the subscription: subscribe again with the same
// application server key and let an open page store it (the worker holds no user token).
self.addEventListener("pushsubscriptionchange", (event) => {
  const options = event.oldSubscription && event.oldSubscription.options;
  if (!options) return;
  event.waitUntil(
    self.registration.pushManager.subscribe(options).then(async (subscription) => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const client of windows) {
        client.postMessage({ type: "notify-push-subscription-changed", subscription: subscription.toJSON() });
      }
    }),
  );
});
