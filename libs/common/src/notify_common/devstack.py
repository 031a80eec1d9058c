"""`make dev`: the whole system on one machine, on the embedded defaults.

Starts (unless NOTIFY_DATABASE_URL / NOTIFY_KAFKA_BOOTSTRAP point at real servers) an
embedded PostgreSQL and the embedded Kafka-protocol broker, applies migrations, creates the
topics, starts every service as its own process, seeds a demo server and user, prints the
URLs and credentials, and on Ctrl-C stops everything it started, by PID.

State (database files, logs, generated dev secrets) lives under .state/ (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from notify_common.auth import issue_user_token
from notify_common.db.migrate import upgrade
from notify_common.kafka.topics import ensure_topics
from notify_common.settings import CommonSettings, UserAuthSettings
from notify_common.testing import infra
from notify_common.testing.processes import SERVICES, ServiceProcess, script

DEMO_SERVER = "demo-server"
DEMO_USER = "demo-user"


def _secrets(state: Path) -> dict[str, str]:
    """Dev-only secrets, generated once and kept in .state/dev-secrets.env."""
    path = state / "dev-secrets.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            if k:
                values[k] = v
    values.setdefault("NOTIFY_JWT_SECRET", secrets.token_urlsafe(48))
    values.setdefault("NOTIFY_SERVICE_TOKENS", f"upstream:{secrets.token_urlsafe(24)}")
    _dev_vapid(values)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


def _dev_vapid(values: dict[str, str]) -> None:
    """A dev VAPID key pair for push-sender and the inbox, unless one is configured: a key
    from the environment wins, and the public key served to browsers is derived from it."""
    from notify_common.webpush import (
        generate_vapid_private_key,
        load_vapid_private_key,
        public_key_b64,
    )

    configured = os.environ.get("NOTIFY_VAPID_PRIVATE_KEY")
    if configured:
        values.pop("NOTIFY_VAPID_PRIVATE_KEY", None)
        values.setdefault(
            "NOTIFY_VAPID_PUBLIC_KEY",
            public_key_b64(load_vapid_private_key(configured).public_key()),
        )
    elif "NOTIFY_VAPID_PRIVATE_KEY" not in values:
        values["NOTIFY_VAPID_PRIVATE_KEY"], values["NOTIFY_VAPID_PUBLIC_KEY"] = (
            generate_vapid_private_key()
        )
    values.setdefault("NOTIFY_VAPID_SUBJECT", "mailto:notify-dev@example.com")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notify-dev", description=__doc__)
    parser.add_argument("--state", default=os.environ.get("NOTIFY_STATE_DIR", ".state"))
    parser.add_argument("--no-seed", action="store_true", help="skip the demo data")
    args = parser.parse_args(argv)
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    logs = state / "logs"

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    started: list[object] = []
    procs: list[ServiceProcess] = []
    env = {k: v for k, v in os.environ.items() if k.startswith("NOTIFY_")}
    env.update({k: v for k, v in _secrets(state).items() if k not in os.environ})
    try:
        if "NOTIFY_DATABASE_URL" not in env:
            pg = infra.embedded_postgres(state / "pg", port=infra.free_port())
            started.append(pg)
            try:
                env["NOTIFY_DATABASE_URL"] = pg.create_database("notify")
            except Exception:  # already exists from an earlier run
                env["NOTIFY_DATABASE_URL"] = pg.server_url("notify")
            print(f"PostgreSQL (embedded): {env['NOTIFY_DATABASE_URL']}")
        else:
            print("PostgreSQL: using NOTIFY_DATABASE_URL")
        if "NOTIFY_KAFKA_BOOTSTRAP" not in env:
            port = 9092 if not infra.port_open("127.0.0.1", 9092) else infra.free_port()
            broker = infra.embedded_broker(logs / "tansu.log", port=port)
            started.append(broker)
            env["NOTIFY_KAFKA_BOOTSTRAP"] = broker.bootstrap
            env.setdefault("NOTIFY_KAFKA_SINGLE_RECORD_BATCHES", "true")
            print(f"Kafka (embedded Tansu, memory-only): {broker.bootstrap}")
        else:
            print(f"Kafka: {env['NOTIFY_KAFKA_BOOTSTRAP']}")
        env.setdefault("NOTIFY_KAFKA_SESSION_TIMEOUT_MS", "6000")
        # The notification center page (served by the inbox) streams from realtime, and
        # the dev-only sign-in link opens it as the demo user.
        inbox_url = (
            f"http://127.0.0.1:{env.get(SERVICES['inbox'].port_env, SERVICES['inbox'].port)}"
        )
        realtime_port = env.get(SERVICES["realtime"].port_env, SERVICES["realtime"].port)
        env.setdefault("NOTIFY_REALTIME_PUBLIC_URL", f"http://127.0.0.1:{realtime_port}")
        env.setdefault("NOTIFY_REALTIME_CORS_ORIGINS", inbox_url)
        env.setdefault("NOTIFY_DEV_LOGIN", "true")
        env.setdefault("NOTIFY_LOG_JSON", "true")
        mail_dir: Path | None = None
        if "NOTIFY_SMTP_URL" not in env:
            mail_dir = state / "mail"
            sink = _mail_sink(mail_dir, logs / "mail-sink.log")
            started.append(sink)
            env["NOTIFY_SMTP_URL"] = sink.url
            print(f"SMTP sink (dev): {sink.url} -> {mail_dir}/*.eml")
        else:
            print("SMTP: using NOTIFY_SMTP_URL")
        env.setdefault("NOTIFY_EMAIL_FROM", "Notify <notify@localhost>")
        env.setdefault("NOTIFY_EMAIL_UNSUBSCRIBE_URL", f"{inbox_url}/v1/email/unsubscribe")

        upgrade(env["NOTIFY_DATABASE_URL"])
        settings = CommonSettings(
            kafka_bootstrap=env["NOTIFY_KAFKA_BOOTSTRAP"],
            topic_prefix=env.get("NOTIFY_TOPIC_PREFIX", ""),
        )
        ensure_topics(settings)

        for spec in SERVICES.values():
            port = int(env.get(spec.port_env, spec.port))
            procs.append(ServiceProcess(spec, env, port, logs / f"{spec.name}.log").start())
        for p in procs:
            p.wait_ready(timeout=120)

        auth = UserAuthSettings(jwt_secret=env["NOTIFY_JWT_SECRET"])
        service_token = env["NOTIFY_SERVICE_TOKENS"].split(",")[0].split(":")[1]
        urls = {p.spec.name: p.url for p in procs}
        if not args.no_seed:
            _seed(urls["ingest"], service_token)
        user_jwt = issue_user_token(auth, DEMO_USER)
        admin_jwt = issue_user_token(auth, "demo-admin", admin=True)
        print("\nNotify is running. Services:")
        for name, url in urls.items():
            print(f"  {name:<8} {url}   (OpenAPI: {url}/docs, metrics: {url}/metrics)")
        print(f"\nNotification center (signed in as {DEMO_USER}):")
        print(f"  {urls['inbox']}/app/dev-login")
        print(f"\nIngest service token:  {service_token}")
        print(f"Demo user JWT ({DEMO_USER}):\n  {user_jwt}")
        print(f"Admin JWT (demo-admin):\n  {admin_jwt}")
        print("\nTry it (post a message; it appears on the page at once):")
        print(
            f"  curl -s -X POST {urls['ingest']}/v1/messages -H 'Authorization: Bearer "
            f"{service_token}' -H 'Content-Type: application/json' -d '{{\"message_id\": "
            f'"hello-\'$(date +%s%N)\'", "server_id": "{DEMO_SERVER}", "channel_id": "general", '
            f'"sender_id": "demo-bot", "sender_name": "Demo Bot", "content": '
            f'"Hello from Notify"}}\''
        )
        print(f"  curl -s {urls['inbox']}/v1/notifications -H 'Authorization: Bearer {user_jwt}'")
        if mail_dir is not None:
            print(f"\nEmail: every mail lands in {mail_dir} as an .eml file (open it in any")
            print("  mail client). Critical notifications are mailed at once; the rest wait")
            print("  for the daily digest. To send the digests due now:")
            print(f"  {_digest_command(env)}")
        print(f"\nLogs: {logs}   Stop: Ctrl-C")
        while not stop.wait(1.0):
            for p in procs:
                if p.proc is not None and p.proc.poll() is not None:
                    print(
                        f"{p.spec.name} exited ({p.proc.returncode}); see {p.log_path}",
                        file=sys.stderr,
                    )
                    stop.set()
    finally:
        print("\nstopping…")
        for p in reversed(procs):
            p.stop()
        for s in reversed(started):
            s.stop()  # type: ignore[attr-defined]
    return 0


@dataclass
class _MailSink:
    """The local SMTP sink (`notify-email-digest sink`), a child process of ours."""

    url: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self) -> None:
        infra.stop_process(self.proc)
        self.log.close()


def _mail_sink(directory: Path, log_path: Path) -> _MailSink:
    """Start the SMTP sink on port 1025 (another free port when that is taken)."""
    port = 1025 if not infra.port_open("127.0.0.1", 1025) else infra.free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - closed by _MailSink.stop
    proc = subprocess.Popen(
        [script("notify-email-digest"), "sink", "--dir", str(directory), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sink = _MailSink(url=f"smtp://127.0.0.1:{port}", proc=proc, log=log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the mail sink exited with {proc.returncode}; see {log_path}")
        return infra.port_open("127.0.0.1", port)

    try:
        infra.wait_for(ready, timeout=30, what="SMTP sink")
    except Exception:
        sink.stop()
        raise
    return sink


def _digest_command(env: dict[str, str]) -> str:
    """A shell line that runs one digest pass against this dev stack."""
    names = (
        "NOTIFY_DATABASE_URL",
        "NOTIFY_KAFKA_BOOTSTRAP",
        "NOTIFY_TOPIC_PREFIX",
        "NOTIFY_SMTP_URL",
        "NOTIFY_EMAIL_FROM",
        "NOTIFY_EMAIL_UNSUBSCRIBE_URL",
    )
    assigned = " ".join(f"{n}={shlex.quote(env[n])}" for n in names if n in env)
    return f"{assigned} {script('notify-email-digest')} run-digest"


def _seed(ingest: str, token: str) -> None:
    """A demo server with the demo user (entitled), an admin and a bot as sender."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=ingest, headers=headers, timeout=10) as c:
        for uid, name, admin in [
            (DEMO_USER, "Demo User", False),
            ("demo-admin", "Demo Admin", True),
            ("demo-bot", "Demo Bot", False),
        ]:
            c.put(
                f"/v1/users/{uid}",
                json={
                    "display_name": name,
                    "entitled": True,
                    "is_admin": admin,
                    "email": f"{uid}@example.test",
                },
            ).raise_for_status()
            c.put(
                f"/v1/servers/{DEMO_SERVER}/members/{uid}", json={"server_name": "Demo Server"}
            ).raise_for_status()
    time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
