/* Notify Web Push: the subscribe flow for the notification-center page.
 *
 *   <script src="/app/push/push.js"></script>
 *   const push = NotifyPush.create({ token: () => currentJwt });   // options below
 *   await push.state();          // "unsupported" | "unavailable" | "denied" |
 *                                // "subscribed" | "unsubscribed"
 *   button.onclick = () => push.subscribe();   // must run inside a user gesture
 *   await push.unsubscribe();
 *   await push.refresh();        // on page load: keeps the server's copy current and
 *                                // re-subscribes after a VAPID key rotation
 *
 * Options: token (function returning the user's JWT; required), apiBase ("" = this
 * origin), serviceWorker ("/app/sw.js"), scope ("/app/").
 * Degrades gracefully: where Push, Notification or service workers are missing, state()
 * says "unsupported" and subscribe() rejects with an Error whose message says so.
 */
"use strict";

(function (global) {
  function supported() {
    return (
      "serviceWorker" in navigator &&
      "PushManager" in global &&
      "Notification" in global &&
      global.isSecureContext !== false
    );
  }

  function toBytes(base64url) {
    const padded = (base64url + "===".slice((base64url.length + 3) % 4))
      .replace(/-/g, "+")
      .replace(/_/g, "/");
    const raw = atob(padded);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function sameKey(buffer, base64url) {
    if (!buffer) return false;
    const a = new Uint8Array(buffer);
    const b = toBytes(base64url);
    return a.length === b.length && a.every((v, i) => v === b[i]);
  }

  function device() {
    const ua = navigator.userAgent || "";
    const platform = (navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || "";
    return { user_agent: ua.slice(0, 512), platform: platform.slice(0, 64) };
  }

  function create(options) {
    const opts = Object.assign(
      { apiBase: "", serviceWorker: "/app/sw.js", scope: "/app/" },
      options || {},
    );
    if (typeof opts.token !== "function") throw new Error("NotifyPush: a token() function is required");

    async function api(path, init) {
      const response = await fetch(opts.apiBase + path, Object.assign({}, init, {
        headers: Object.assign(
          { Authorization: "Bearer " + opts.token(), "Content-Type": "application/json" },
          (init && init.headers) || {},
        ),
      }));
      return response;
    }

    async function publicKey() {
      const response = await fetch(opts.apiBase + "/v1/push/public-key");
      if (!response.ok) return null; // 404: push is not enabled on this server
      return (await response.json()).public_key;
    }

    async function registration() {
      return navigator.serviceWorker.register(opts.serviceWorker, { scope: opts.scope });
    }

    async function save(subscription) {
      const body = Object.assign(subscription.toJSON ? subscription.toJSON() : subscription, {
        device: device(),
      });
      const response = await api("/v1/push/subscriptions", {
        method: "POST",
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const detail = await response.json().catch(() => ({}));
        throw new Error("the server refused the subscription: " + JSON.stringify(detail.detail || response.status));
      }
      return response.json();
    }

    async function current() {
      const reg = await navigator.serviceWorker.getRegistration(opts.scope);
      return reg ? reg.pushManager.getSubscription() : null;
    }

    async function state() {
      if (!supported()) return "unsupported";
      if (!(await publicKey())) return "unavailable";
      if (Notification.permission === "denied") return "denied";
      return (await current()) ? "subscribed" : "unsubscribed";
    }

    // Call from a click (or another user gesture): browsers only prompt for permission then.
    async function subscribe() {
      if (!supported()) throw new Error("Web Push is not supported in this browser");
      const key = await publicKey();
      if (!key) throw new Error("Web Push is not enabled on this server");
      const permission = await Notification.requestPermission();
      if (permission !== "granted") throw new Error("notifications were not allowed");
      const reg = await registration();
      await navigator.serviceWorker.ready;
      let subscription = await reg.pushManager.getSubscription();
      if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe(); // made with a previous key: start over
        subscription = null;
      }
      if (!subscription) {
        subscription = await reg.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: toBytes(key),
        });
      }
      return save(subscription);
    }

    async function unsubscribe() {
      const subscription = await current();
      if (!subscription) return false;
      const response = await api("/v1/push/subscriptions");
      if (response.ok) {
        const mine = (await response.json()).items.find((s) => s.endpoint === subscription.endpoint);
        if (mine) await api("/v1/push/subscriptions/" + mine.id, { method: "DELETE" });
      }
      return subscription.unsubscribe();
    }

    // On page load, without prompting: store the browser's subscription again (the
    // server updates it in place) and follow a VAPID key rotation.
    async function refresh() {
      if (!supported() || Notification.permission !== "granted") return null;
      const subscription = await current();
      if (!subscription) return null;
      const key = await publicKey();
      if (!key) return null;
      if (!sameKey(subscription.options.applicationServerKey, key)) return subscribe();
      return save(subscription);
    }

    if (supported()) {
      navigator.serviceWorker.addEventListener("message", (event) => {
        if (event.data && event.data.type === "notify-push-subscription-changed") {
          save(event.data.subscription).catch(() => {});
        }
      });
    }

    return { supported, state, subscribe, unsubscribe, refresh };
  }

  global.NotifyPush = { create, supported };
})(typeof window !== "undefined" ? window : self);
