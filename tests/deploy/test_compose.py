"""docker-compose.yml, checked statically (no Docker engine runs in CI): commands are real
console scripts, variables are real settings, ports are the settings' defaults, start-up
order waits on health and completion."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.support import ROOT, console_scripts, settings_env

pytestmark = pytest.mark.deploy

COMPOSE = ROOT / "docker-compose.yml"
NOTIFY_IMAGE = "notify:dev"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def notify_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if s.get("image") == NOTIFY_IMAGE}


def long_running() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in notify_services().items() if s.get("restart") != "no"}


def test_the_stack_is_complete() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "migrate", "topics", "prometheus", "grafana", "mailpit"} <= set(
        services
    )
    assert set(long_running()) == {
        "ingest",
        "inbox",
        "fanout",
        "realtime",
        "push-sender",
        "email-digest",
    }


def test_kafka_runs_in_kraft_mode_with_a_healthcheck() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from notify-admin topics"
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["healthcheck"]["test"]


def test_postgres_16_with_a_healthcheck() -> None:
    postgres = compose()["services"]["postgres"]
    assert re.match(r"postgres:16(\D|$)", postgres["image"])
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_notify_services_are_built_from_the_one_dockerfile() -> None:
    for name, svc in notify_services().items():
        assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name


def test_commands_are_console_scripts() -> None:
    scripts = console_scripts()
    for name, svc in notify_services().items():
        command = svc["command"]
        assert isinstance(command, list), f"{name}: exec form, so signals reach the service"
        assert command[0] in scripts, f"{name}: {command[0]} is not a console script"
    assert notify_services()["migrate"]["command"] == ["notify-admin", "migrate"]
    assert notify_services()["topics"]["command"] == ["notify-admin", "topics"]


def test_environment_names_are_settings_fields() -> None:
    known = settings_env()
    anchor = compose()["x-notify-env"]
    for name, svc in notify_services().items():
        env = svc["environment"]
        assert env == anchor, f"{name} must use the shared x-notify-env"
        unknown = {k for k in env if k.startswith("NOTIFY_")} - set(known)
        assert not unknown, f"{name}: no settings class reads {unknown}"
    # Required settings (no default) of the running services are all provided.
    assert {"NOTIFY_DATABASE_URL", "NOTIFY_JWT_SECRET", "NOTIFY_SERVICE_TOKENS"} <= set(anchor)


def test_ports_match_the_settings_defaults() -> None:
    defaults = settings_env()
    for name, svc in long_running().items():
        port = defaults[f"NOTIFY_{name.upper().replace('-', '_')}_PORT"]
        assert svc["ports"] == [f"{port}:{port}"], name
        test = svc["healthcheck"]["test"]
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(test), name


def test_healthcheck_commands_compile() -> None:
    for name, svc in long_running().items():
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        compile(test[3], f"{name} healthcheck", "exec")


def test_start_up_waits_on_health_and_completion() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for dependency, spec in svc.get("depends_on", {}).items():
            assert spec["condition"] in {"service_healthy", "service_completed_successfully"}, name
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    done = {"condition": "service_completed_successfully"}
    for name in long_running():
        assert services[name]["depends_on"]["topics"] == done, name
    assert services["inbox"]["depends_on"]["migrate"] == done
    assert services["migrate"]["restart"] == services["topics"]["restart"] == "no"


def test_services_get_time_to_drain() -> None:
    for name, svc in long_running().items():
        assert int(svc["stop_grace_period"].rstrip("s")) > 10, name


def test_bind_mounts_exist_and_prometheus_loads_the_alerts() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    prometheus = " ".join(services["prometheus"]["volumes"])
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml" in prometheus
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in prometheus


def test_smtp_sink_with_web_ui() -> None:
    mailpit = compose()["services"]["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit:")
    assert {"1025:1025", "8025:8025"} <= set(mailpit["ports"])


def test_docker_compose_accepts_the_file() -> None:
    """Where a Docker client with the compose plugin exists, let it check the file too."""
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("no `docker compose` here: the file is checked statically above")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
