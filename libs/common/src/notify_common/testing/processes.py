"""Run Notify services as real processes (for `make dev`, e2e tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from notify_common.testing.infra import stop_process


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: str  # console script
    port: int
    port_env: str


# Every service: its console script and its health/metrics port (ARCHITECTURE.md "Ports").
SERVICES = {
    "ingest": ServiceSpec("ingest", "notify-ingest", 8000, "NOTIFY_INGEST_PORT"),
    "inbox": ServiceSpec("inbox", "notify-inbox", 8001, "NOTIFY_INBOX_PORT"),
    "realtime": ServiceSpec("realtime", "notify-realtime", 8002, "NOTIFY_REALTIME_PORT"),
    "fanout": ServiceSpec("fanout", "notify-fanout", 8003, "NOTIFY_FANOUT_PORT"),
    "push-sender": ServiceSpec(
        "push-sender", "notify-push-sender", 8004, "NOTIFY_PUSH_SENDER_PORT"
    ),
    "email-digest": ServiceSpec(
        "email-digest", "notify-email-digest", 8005, "NOTIFY_EMAIL_DIGEST_PORT"
    ),
}


def script(command: str) -> str:
    """The console script installed beside this interpreter (the workspace venv)."""
    candidate = Path(sys.executable).parent / command
    return str(candidate) if candidate.exists() else command


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        env = {
            **os.environ,
            **self.env,
            self.spec.port_env: str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [script(self.spec.command)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 60.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                r = httpx.get(self.url + path, timeout=2)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{self.spec.name} not ready in {timeout}s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, timeout=timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to drain or commit (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None
