"""What the deployment checks compare against: the code's own declarations (console scripts,
settings fields, metrics), read from the workspace rather than restated here, so the
Dockerfile, compose file, chart, alerts and dashboards cannot drift from the services."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shutil
import tomllib
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client.metrics import MetricWrapperBase
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "k8s" / "notify"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"

# Settings modules of every service. The planned ones are used once they import.
SETTINGS_MODULES = [
    "notify_common.settings",
    "notify_ingest.settings",
    "notify_inbox.settings",
    "notify_inbox.webapp",
    "notify_fanout.settings",
    "notify_realtime.settings",
    "notify_push_sender.settings",
    "notify_email_digest.settings",
]

# Variables of services that do not exist yet (ARCHITECTURE.md "Configuration" and "Ports"),
# each with the settings module that will declare it. The chart already carries them; once
# that module imports, its settings class is the judge and the allowance here lapses, so a
# chart that disagrees with the new service fails. Anything else must be a settings field.
PLANNED_ENV = {
    "NOTIFY_REALTIME_PORT": "notify_realtime.settings",
    "NOTIFY_PUSH_SENDER_PORT": "notify_push_sender.settings",
    "NOTIFY_VAPID_PRIVATE_KEY": "notify_push_sender.settings",
    "NOTIFY_VAPID_SUBJECT": "notify_push_sender.settings",
    "NOTIFY_EMAIL_DIGEST_PORT": "notify_email_digest.settings",
    "NOTIFY_SMTP_URL": "notify_email_digest.settings",
    "NOTIFY_EMAIL_FROM": "notify_email_digest.settings",
    "NOTIFY_EMAIL_DAILY_QUOTA": "notify_email_digest.settings",
    "NOTIFY_DIGEST_HOUR_UTC": "notify_email_digest.settings",
}
PLANNED_SCRIPTS = {"notify-realtime", "notify-push-sender", "notify-email-digest"}

# Metrics of services that do not exist yet, which dashboards and alerts already use. A name
# outside metrics.py and this list is a typo.
PLANNED_METRICS = {
    "notify_email_quota_used",
    "notify_email_quota_limit",
    "notify_sse_connections",
    "notify_push_failures_total",
}
# Series Prometheus itself attaches to every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# The secret settings: they may only ever come from a Secret.
SECRET_ENV = {
    "NOTIFY_DATABASE_URL",
    "NOTIFY_JWT_SECRET",
    "NOTIFY_SERVICE_TOKENS",
    "NOTIFY_VAPID_PRIVATE_KEY",
    "NOTIFY_SMTP_URL",
}


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    found: list[type[BaseSettings]] = []
    for name in SETTINGS_MODULES:
        module = _import(name)
        if module is None:
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseSettings) and obj is not BaseSettings and obj not in found:
                found.append(obj)
    return tuple(found)


@cache
def settings_env() -> dict[str, object]:
    """NOTIFY_* variable -> the field's default (None when required)."""
    env: dict[str, object] = {}
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        assert prefix == "NOTIFY_", f"{cls.__name__} reads {prefix!r}, not NOTIFY_"
        for field, info in cls.model_fields.items():
            env[f"{prefix}{field.upper()}"] = None if info.is_required() else info.default
    return env


def known_env() -> set[str]:
    planned = {env for env, module in PLANNED_ENV.items() if _import(module) is None}
    return set(settings_env()) | planned


@cache
def console_scripts() -> dict[str, str]:
    """Console script -> entry point, from every workspace member's pyproject.toml."""
    scripts: dict[str, str] = {}
    for pyproject in [ROOT / "libs/common/pyproject.toml", *ROOT.glob("services/*/pyproject.toml")]:
        data = tomllib.loads(pyproject.read_text())
        scripts.update(data.get("project", {}).get("scripts", {}))
    return scripts


@cache
def declared_metrics() -> set[str]:
    """Every series name the metrics module can expose (counter x_total, histogram x_bucket…)."""
    from notify_common import metrics

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    names: set[str] = set()
    for _, obj in inspect.getmembers(metrics):
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    assert names, "no metric found in notify_common.metrics"
    return names


def known_metrics() -> set[str]:
    return declared_metrics() | PLANNED_METRICS | PROMETHEUS_SERIES


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan",
}  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression selects.

    Good enough for the expressions we write: strings, label matchers, ranges and label
    lists are removed, then every identifier that is not a function call, a keyword or a
    number is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LISTS.sub("", text)
    text = re.sub(r"\boffset\s+\S+", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def promtool() -> str:
    """promtool's path, or skip: `make tools` (a dependency of `make test`) installs it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed and could not be installed here: `make tools` installs "
            "Debian's prometheus package (needs apt-get and root or sudo)"
        )
    return path


@cache
def render_module() -> ModuleType:
    """deploy/k8s/render.py, the renderer `make chart` uses."""
    spec = importlib.util.spec_from_file_location("notify_chart_render", DEPLOY / "k8s/render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
