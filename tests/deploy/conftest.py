"""Chart renders shared by the deployment tests: rendering is the slow part (about a second
each through Helm's Go SDK), so each values set is rendered once per session."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.support import DEPLOY, render_module

PRODUCTION_VALUES = DEPLOY / "k8s" / "values-production.yaml"

# Production plus the planned services and every optional resource: the widest render, so
# templates that only the flags reach are validated too.
EVERYTHING_ON = {
    "services": {
        "realtime": {"enabled": True},
        "pushSender": {"enabled": True},
        "emailDigest": {"enabled": True},
    },
}


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return values


def everything_on_values() -> dict[str, Any]:
    values: dict[str, Any] = render_module().merge_values(production_values(), EVERYTHING_ON)
    return values


VALUE_SETS = {
    "default": dict,
    "production": production_values,
    "everything-on": everything_on_values,
}


@pytest.fixture(scope="session")
def renders() -> dict[str, dict[str, str]]:
    """Values set name -> {template file -> rendered text}."""
    render = render_module().render
    return {name: render(make()) for name, make in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def manifests(renders: dict[str, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Values set name -> every rendered Kubernetes object."""
    to_docs = render_module().manifests
    return {name: to_docs(rendered) for name, rendered in renders.items()}


@pytest.fixture(params=list(VALUE_SETS))
def values_set(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
