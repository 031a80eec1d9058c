"""The load scenario of the reliability suite (tests/reliability/test_load.py runs it with
locust, headless, in its own process): an upstream app posting messages, users reading
their feeds, and users holding the realtime stream open.

Everything it needs comes from the environment: NOTIFY_LOAD_INGEST, NOTIFY_LOAD_INBOX,
NOTIFY_LOAD_REALTIME (base URLs), NOTIFY_LOAD_SERVICE_TOKEN, NOTIFY_LOAD_USERS (JSON: user
id → JWT), NOTIFY_LOAD_SERVER, NOTIFY_LOAD_SENDER.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from locust import HttpUser, between, task

INGEST = os.environ["NOTIFY_LOAD_INGEST"]
INBOX = os.environ["NOTIFY_LOAD_INBOX"]
REALTIME = os.environ["NOTIFY_LOAD_REALTIME"]
SERVICE_TOKEN = os.environ["NOTIFY_LOAD_SERVICE_TOKEN"]
USERS: dict[str, str] = json.loads(os.environ["NOTIFY_LOAD_USERS"])
SERVER = os.environ["NOTIFY_LOAD_SERVER"]
SENDER = os.environ["NOTIFY_LOAD_SENDER"]


class UpstreamApp(HttpUser):
    host = INGEST
    weight = 2
    wait_time = between(0.05, 0.2)

    @task
    def post_message(self) -> None:
        self.client.post(
            "/v1/messages",
            json={
                "message_id": f"load-{uuid.uuid4().hex}",
                "server_id": SERVER,
                "channel_id": random.choice(["general", "random", "dev"]),
                "sender_id": SENDER,
                "sender_name": "Load",
                "content": "load " * random.randint(1, 40),
            },
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            name="POST /v1/messages",
        )


class Reader(HttpUser):
    host = INBOX
    weight = 3
    wait_time = between(0.3, 1.0)

    def on_start(self) -> None:
        self.user_id = random.choice(list(USERS))
        self.client.headers["Authorization"] = f"Bearer {USERS[self.user_id]}"

    @task(3)
    def feed(self) -> None:
        self.client.get("/v1/notifications", params={"limit": 20}, name="GET /v1/notifications")

    @task(2)
    def unread(self) -> None:
        self.client.get("/v1/notifications/unread-count", name="GET unread-count")

    @task(1)
    def mark_all(self) -> None:
        self.client.post("/v1/notifications/mark-all-read", name="POST mark-all-read")


class Streamer(HttpUser):
    """Holds the stream open for a while, as an open tab does, then reconnects."""

    host = REALTIME
    weight = 1
    wait_time = between(0.5, 1.0)

    @task
    def stream(self) -> None:
        user_id = random.choice(list(USERS))
        started = time.monotonic()
        with self.client.get(
            "/v1/stream",
            params={"token": USERS[user_id]},
            stream=True,
            timeout=30,
            name="GET /v1/stream (10 s)",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            events = 0
            for line in r.iter_lines():
                if line.startswith(b"event:"):
                    events += 1
                if time.monotonic() - started > 10:
                    break
            if events == 0:
                r.failure("no event within 10 s (not even the unread count)")
            else:
                r.success()
