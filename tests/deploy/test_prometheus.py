"""Alert rules (deploy/prometheus/alerts.yml), their promtool unit tests, and the compose
Prometheus configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import ALERTS, DEPLOY, ROOT, known_metrics, promql_metric_names, promtool

pytestmark = pytest.mark.deploy

PROMETHEUS = DEPLOY / "prometheus"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules() -> None:
    result = run("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    # Also resolves rule_files relative to the config, as compose mounts them.
    result = run("check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(test_file: Path) -> None:
    result = run("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested: set[str] = set()
    for test_file in RULE_TESTS:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):  # a test that only expects silence proves little
                    tested.add(check["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts - tested == set(), "alerts never shown firing in deploy/prometheus/tests/"


def test_the_requested_alerts_exist() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    expected = {
        "NotifyConsumerLagGrowing", "NotifyDLQWrite", "NotifyPushFailures",
        "NotifyEmailQuota80Percent", "NotifyEmailQuota90Percent", "NotifyEmailQuotaExhausted",
        "NotifyServiceDown", "NotifyHTTPErrorRatioHigh",
    }  # fmt: skip
    assert expected <= set(alerts)
    assert alerts["NotifyConsumerLagGrowing"]["for"] == "10m"
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rules_use_only_declared_metrics() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    unknown = {}
    for rule in rules():
        names = promql_metric_names(rule["expr"]) - known_metrics() - recorded
        if names:
            unknown[rule.get("alert") or rule.get("record")] = names
    assert not unknown, f"metric names neither in notify_common/metrics.py nor planned: {unknown}"


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: raise the lag floor out of reach and the lag test must fail."""
    broken = ALERTS.read_text().replace(
        "notify:consumer_group_lag_messages:sum > 100",
        "notify:consumer_group_lag_messages:sum > 100000",
    )
    assert broken != ALERTS.read_text()
    (tmp_path / "tests").mkdir()
    (tmp_path / "alerts.yml").write_text(broken)
    test_file = tmp_path / "tests" / "consumer-lag.test.yml"
    test_file.write_text((PROMETHEUS / "tests" / "consumer-lag.test.yml").read_text())
    result = run("test", "rules", test_file)
    assert result.returncode != 0
    assert "NotifyConsumerLagGrowing" in result.stdout + result.stderr


def test_compose_prometheus_scrapes_every_notify_service_as_notify_job() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    notify_services = {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image") == "notify:dev" and name not in ("migrate", "topics")
    }
    scraped = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    for name, svc in notify_services.items():
        container_port = svc["ports"][0].split(":")[-1]
        assert scraped.get(f"notify-{name}") == [f"{name}:{container_port}"], name
    assert set(scraped) == {f"notify-{n}" for n in notify_services}
