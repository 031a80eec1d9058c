"""Grafana dashboards (deploy/grafana/dashboards) and provisioning: valid JSON, a datasource
variable everywhere, PromQL that parses and names only metrics that exist (or are planned)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    DASHBOARDS,
    DEPLOY,
    ROOT,
    known_metrics,
    promql_metric_names,
    promtool,
)

pytestmark = pytest.mark.deploy

DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
DATASOURCE = "${datasource}"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def test_there_is_an_overview() -> None:
    assert DASHBOARDS / "notify-overview.json" in DASHBOARD_FILES


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_valid_and_uses_the_datasource_variable(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["uid"] and dashboard["title"] and exprs(dashboard)
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        # A hard-coded data source uid breaks the dashboard on every other Grafana.
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_queries_name_only_declared_metrics(path: Path) -> None:
    unknown = {e: sorted(promql_metric_names(e) - known_metrics()) for e in exprs(load(path))}
    unknown = {e: names for e, names in unknown.items() if names}
    assert not unknown, f"metric names neither in notify_common/metrics.py nor planned: {unknown}"


def test_a_typo_in_a_metric_name_is_caught() -> None:
    typo = (
        'sum by (reason) (rate(notify_fanout_supressed_total{job=~"notify-.+"}[$__rate_interval]))'
    )
    assert promql_metric_names(typo) - known_metrics() == {"notify_fanout_supressed_total"}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_queries_parse(path: Path, tmp_path: Path) -> None:
    """Each query as a recording rule, for promtool's PromQL parser ($__ variables are
    Grafana's: replaced by a plain range)."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for i, expr in enumerate(exprs(load(path)))
    ]
    rules_file = tmp_path / "queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_overview_shows_what_operators_asked_for() -> None:
    queries = "\n".join(exprs(load(DASHBOARDS / "notify-overview.json")))
    wanted = {
        "ingest rate": "notify_ingest_accepted_total",
        "fanout rate": "notify_fanout_recipients_total",
        "suppressions": "notify_fanout_suppressed_total",
        "per-channel delivery outcomes": "sum by (channel, outcome) (rate(notify_deliveries_total",
        "lag per consumer group": (
            "sum by (group) (max by (group, topic, partition) (notify_consumer_lag_messages))"
        ),
        "DLQ writes": "notify_dlq_messages_total",
        "email quota": "notify_email_quota_used",
        "SSE connections": "notify_sse_connections",
        "error rates": 'status="5xx"',
        "HTTP p99": (
            "histogram_quantile(0.99, sum by (service, le) "
            "(rate(notify_http_request_duration_seconds_bucket"
        ),
    }
    missing = [what for what, fragment in wanted.items() if fragment not in queries]
    assert not missing


def test_compose_grafana_provisions_the_datasource_and_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "notify.yml").read_text())[
        "providers"
    ]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(
        v.rsplit(":", 2)[:2]
        for v in compose["services"]["grafana"]["volumes"]
        if v.startswith("./")
    )
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
