"""The Helm chart (deploy/k8s/notify): lint, values schema, and the rendered manifests for
the default values, the production values and everything switched on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from notify_schemas.topics import all_topics
from tests.deploy.conftest import VALUE_SETS, everything_on_values, production_values
from tests.deploy.support import (
    ALERTS,
    CHART,
    DASHBOARDS,
    PLANNED_SCRIPTS,
    ROOT,
    SECRET_ENV,
    console_scripts,
    known_env,
    promtool,
    render_module,
)

pytestmark = pytest.mark.deploy

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion): built-in kinds are
# validated against its OpenAPI schema, strictly (an unknown field is an error).
KUBE_VERSION = "1.25"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "KafkaTopic"}
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def values_of(name: str) -> dict[str, Any]:
    """The values a render used, coalesced with the chart's defaults as Helm does."""
    with helm.Chart.load(CHART) as chart:
        merged: dict[str, Any] = chart.merge_values(VALUE_SETS[name]())
    return merged


def enabled_services(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in values["services"].items() if v["enabled"]}


def component(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()


# --- lint and values schema ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_chart_lints_clean_in_strict_mode(name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[name](), strict=True, kube_version=f"v{KUBE_VERSION}.0")
    # Severity 1 is informational ("icon is recommended"); strict fails on 2 (warning) and up.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"services": {"ingest": {"replica": 3}}}, "replica"),
        ({"secrets": {"existingSecret": ""}}, "existingSecret"),
        ({"config": {"logLevel": "LOUD"}}, "logLevel"),
        ({"kafkaTopics": {"enabled": True, "clusterName": ""}}, "clusterName"),
        ({"ingress": {"enabled": True, "tls": {"enabled": True, "secretName": ""}}}, "secretName"),
        ({"services": {"ingest": {"secretEnv": ["jwtSecrt"]}}}, "secretEnv"),
        ({"servics": {}}, "servics"),
    ],
)
def test_values_schema_refuses_mistakes(override: dict[str, Any], complaint: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(chart.merge_values(override))
    assert complaint in str(err.value)


def test_every_values_key_is_documented() -> None:
    """values.yaml is the chart's manual: every key has a comment above it (or inline), except
    inside Kubernetes objects passed through as they are."""
    passthrough = {"podSecurityContext", "securityContext", "resources", "annotations", "labels"}
    passthrough |= {"config", "topics", "requests", "limits", "seccompProfile", "capabilities"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z0-9_.-]+):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1)) + (2 if match.group(2) else 0)
        key = match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_passthrough = any(k in passthrough for _, k in stack)
        # config's keys are settings and documented; its nested "config" in kafkaTopics is not.
        if stack and stack[-1][1] == "config" and len(stack) == 1:
            inside_passthrough = False
        stack.append((indent, key))
        if inside_passthrough or match.group(2):
            continue
        previous = next((p.strip() for p in reversed(lines[:i]) if p.strip()), "")
        if not (previous.startswith("#") or "#" in line.split(":", 1)[1]):
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


def test_topics_in_values_match_the_contract() -> None:
    """Strimzi KafkaTopics must declare what `notify-admin topics` creates: same names,
    partition counts (the fanout's co-partitioning) and cleanup policies."""
    with helm.Chart.load(CHART) as chart:
        topics = chart.values["kafkaTopics"]["topics"]
    declared = {t["name"]: (t["partitions"], t["cleanupPolicy"]) for t in topics}
    contract = {t.name: (t.partitions, t.cleanup) for t in all_topics().values()}
    assert declared == contract


# --- copies kept inside the chart -----------------------------------------------------------


def test_chart_alert_rules_are_a_copy_of_deploy_prometheus() -> None:
    copy = CHART / "files" / "alerts.yml"
    assert copy.read_bytes() == ALERTS.read_bytes(), "run `make deploy-sync`"


def test_chart_dashboards_are_copies_of_deploy_grafana() -> None:
    source = {p.name: p.read_bytes() for p in DASHBOARDS.glob("*.json")}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "dashboards").glob("*.json")}
    assert source, "no dashboards under deploy/grafana/dashboards"
    assert copies == source, "run `make deploy-sync`"


def test_one_template_describes_every_deployment() -> None:
    """Services differ only by values: a per-service template would be a copy to keep in step."""
    templates = [p.name for p in (CHART / "templates").glob("*.yaml")]
    with_deployment = [
        t
        for t in templates
        if re.search(r"^kind: Deployment$", (CHART / "templates" / t).read_text(), re.M)
    ]
    assert with_deployment == ["deployments.yaml"]
    assert (
        "range $key, $svc := .Values.services" in (CHART / "templates/deployments.yaml").read_text()
    )


# --- every rendered manifest --------------------------------------------------------------


def test_built_in_kinds_validate_against_the_kubernetes_schema(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    failures = []
    for doc in manifests[values_set]:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_every_object_carries_the_standard_labels(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    for doc in manifests[values_set]:
        labels = doc["metadata"].get("labels", {})
        missing = [label for label in LABELS if label not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "notify"


def test_only_enabled_services_are_deployed(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    values = values_of(values_set)
    expected = {f"notify-{component(k)}" for k in enabled_services(values)}
    assert set(of_kind(manifests[values_set], "Deployment")) == expected
    assert set(of_kind(manifests[values_set], "Service")) == expected
    if values_set == "default":
        assert expected == {
            "notify-ingest",
            "notify-inbox",
            "notify-fanout",
            "notify-realtime",
            "notify-push-sender",
            "notify-email-digest",
        }


def test_deployments_run_the_right_script_safely(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    values = values_of(values_set)
    deployments = of_kind(manifests[values_set], "Deployment")
    scripts = set(console_scripts()) | PLANNED_SCRIPTS
    for key, svc in enabled_services(values).items():
        pod = deployments[f"notify-{component(key)}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == [svc["command"]] and svc["command"] in scripts
        if svc["command"] not in PLANNED_SCRIPTS:
            assert svc["command"] in console_scripts(), f"{key}: {svc['command']} is not a script"
        assert container["ports"] == [
            {"name": "http", "containerPort": svc["port"], "protocol": "TCP"}
        ]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert (
            container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        )

        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # The path the pods mount, not a temporary file of this test.
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108
        assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])


def _drain_seconds() -> int:
    """The longest graceful shutdown a service's main() asks uvicorn for."""
    found = [
        int(n)
        for main in ROOT.glob("services/*/src/*/main.py")
        for n in re.findall(r"timeout_graceful_shutdown=(\d+)", main.read_text())
    ]
    return max(found, default=10)


def test_pods_get_longer_than_their_drain_to_stop(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    values = values_of(values_set)
    budget = values["preStopSleepSeconds"] + _drain_seconds()
    for name, deployment in of_kind(manifests[values_set], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        # Room beyond the HTTP drain for the consumer to finish and commit its batch.
        assert grace >= budget + 15, f"{name}: {grace}s to stop, drain needs {budget}s and more"
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop == ["sleep", str(values["preStopSleepSeconds"])]


def test_environment_names_are_settings_and_secrets_come_from_the_secret(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    values = values_of(values_set)
    docs = manifests[values_set]
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must not create Secrets"

    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "notify-config"
    ]
    unknown = set(config["data"]) - known_env()
    assert not unknown, f"ConfigMap keys no settings class reads: {unknown}"
    assert not set(config["data"]) & SECRET_ENV

    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    secret_keys = set(values["secrets"]["keys"].values())
    for pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            for env in container.get("env", []):
                assert env["name"] in known_env(), f"{container['name']}: unknown {env['name']}"
                if env["name"] in SECRET_ENV:
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == values["secrets"]["existingSecret"]
                    assert ref["key"] in secret_keys
                    assert "value" not in env


def test_services_get_the_secrets_they_need(manifests: dict[str, list[dict[str, Any]]]) -> None:
    """Settings without a default are required: a service without them refuses to start."""
    deployments = of_kind(manifests["default"], "Deployment")

    def env_of(name: str) -> set[str]:
        return {
            e["name"] for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        }

    # Ingest's database holds the rate-limit counters shared by its replicas.
    assert {"NOTIFY_SERVICE_TOKENS", "NOTIFY_DATABASE_URL"} <= env_of("notify-ingest")
    assert {"NOTIFY_DATABASE_URL", "NOTIFY_JWT_SECRET"} <= env_of("notify-inbox")
    assert not env_of("notify-fanout") & SECRET_ENV
    for name, port in [
        ("notify-ingest", "INGEST"),
        ("notify-inbox", "INBOX"),
        ("notify-fanout", "FANOUT"),
    ]:
        assert f"NOTIFY_{port}_PORT" in env_of(name)


def test_autoscaling_owns_the_replica_count(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    values = values_of(values_set)
    docs = manifests[values_set]
    deployments = of_kind(docs, "Deployment")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    scaled = of_kind(docs, "ScaledObject")
    keda_on = values["keda"]["enabled"]
    for key, svc in enabled_services(values).items():
        name = f"notify-{component(key)}"
        by_keda = keda_on and svc.get("keda") is not None
        by_hpa = svc["autoscaling"]["enabled"] and not by_keda
        assert (name in scaled) == by_keda, name
        assert (name in hpas) == by_hpa, name
        # An autoscaled Deployment without replicas: an upgrade must not reset the count.
        assert ("replicas" in deployments[name]["spec"]) == (not (by_keda or by_hpa)), name
        if by_hpa:
            spec = hpas[name]["spec"]
            assert spec["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert spec["minReplicas"] == svc["autoscaling"]["minReplicas"]
    if values_set == "default":
        assert set(hpas) == {"notify-ingest", "notify-inbox", "notify-realtime"} and not scaled


def test_keda_scales_consumers_on_their_group_lag(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    values = everything_on_values()
    scaled = of_kind(manifests["everything-on"], "ScaledObject")
    assert set(scaled) == {"notify-fanout", "notify-push-sender", "notify-email-digest"}
    groups = {"notify-fanout": "notify-fanout", "notify-push-sender": "notify-push-sender"}
    groups["notify-email-digest"] = "notify-email-digest"
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert spec["scaleTargetRef"] == {"name": name}
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= 6, "6 partitions"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["bootstrapServers"] == values["config"]["kafkaBootstrap"]
        assert meta["consumerGroup"] == groups[name]
        # KEDA reads trigger metadata as strings only.
        assert all(isinstance(v, str) for v in meta.values()), meta
        assert int(meta["lagThreshold"]) > 0


def test_pod_disruption_budgets_never_block_a_drain(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    docs = manifests[values_set]
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == set(of_kind(docs, "Deployment"))
    for name, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == name.removeprefix("notify-")


def test_ingress_routes_the_http_apis(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(manifests["default"], "Ingress"), "ingress is opt-in"
    ingresses = of_kind(manifests["everything-on"], "Ingress")
    assert set(ingresses) == {"notify-ingest", "notify-inbox", "notify-realtime"}
    routes = {}
    for name, ingress in ingresses.items():
        spec = ingress["spec"]
        assert spec["tls"] == [{"hosts": ["notify.example.com"], "secretName": "notify-tls"}]
        (rule,) = spec["rules"]
        assert rule["host"] == "notify.example.com"
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": name, "port": {"name": "http"}}
            routes[path["path"]] = name
    assert routes["/v1/messages"] == "notify-ingest"
    assert routes["/v1/notifications"] == "notify-inbox"
    assert routes["/v1/stream"] == "notify-realtime"
    assert "/v1/admin" not in routes, "the admin API is not public by default"
    # SSE must not be buffered by the controller; the other APIs keep its defaults.
    realtime = ingresses["notify-realtime"]["metadata"]["annotations"]
    assert realtime["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert (
        "nginx.ingress.kubernetes.io/proxy-buffering"
        not in ingresses["notify-ingest"]["metadata"]["annotations"]
    )


def test_migrations_run_as_a_hook_before_the_services(
    manifests: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    (job,) = of_kind(manifests[values_set], "Job").values()
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    pod = job["spec"]["template"]["spec"]
    steps = [c["command"] for c in pod.get("initContainers", []) + pod["containers"]]
    assert steps == [["notify-admin", "migrate"], ["notify-admin", "topics"]]
    assert "notify-admin" in console_scripts()
    # Hooks run before the release's ConfigMap and ServiceAccount exist.
    for container in pod.get("initContainers", []) + pod["containers"]:
        assert "envFrom" not in container
    assert "serviceAccountName" not in pod
    assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize("subcommand", ["migrate", "topics"])
def test_notify_admin_has_the_hook_subcommands(subcommand: str) -> None:
    from notify_common import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main([subcommand, "--help"])
    assert exit_.value.code == 0


def test_optional_resources_are_off_by_default(manifests: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d["kind"] for d in manifests["default"]}
    assert not kinds & CRD_KINDS
    assert not any(d["metadata"]["name"] == "notify-dashboards" for d in manifests["default"])


def test_service_monitors_scrape_every_service_as_its_alerting_job(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["everything-on"]
    monitors = of_kind(docs, "ServiceMonitor")
    services = of_kind(docs, "Service")
    assert set(monitors) == set(services)
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector == services[name]["spec"]["selector"]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        # alerts.yml selects job=~"notify-.+"; the release name must not leak into it.
        assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": name}]


def test_prometheus_rule_carries_alerts_yml(
    manifests: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    (rule,) = of_kind(manifests["production"], "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    # And Prometheus accepts what arrives in the cluster.
    rules_file = tmp_path / "rendered-rules.yml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_configmap_is_labelled_for_the_grafana_sidecar(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    (cm,) = [d for d in manifests["production"] if d["metadata"]["name"] == "notify-dashboards"]
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Notify"
    source = {p.name: json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")}
    assert {k: json.loads(v) for k, v in cm["data"].items()} == source


def test_strimzi_topics_declare_the_contract(manifests: dict[str, list[dict[str, Any]]]) -> None:
    values = production_values()
    topics = of_kind(manifests["production"], "KafkaTopic")
    contract = all_topics()
    assert {t["spec"]["topicName"] for t in topics.values()} == set(contract)
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
        assert (
            topic["metadata"]["labels"]["strimzi.io/cluster"]
            == values["kafkaTopics"]["clusterName"]
        )
        assert topic["metadata"]["namespace"] == values["kafkaTopics"]["namespace"]
        # Deleting a KafkaTopic deletes the topic's data: `helm uninstall` must leave them.
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        spec = topic["spec"]
        expected = contract[spec["topicName"]]
        assert spec["partitions"] == expected.partitions
        assert spec["config"]["cleanup.policy"] == expected.cleanup
        assert spec["replicas"] == values["kafkaTopics"]["replicas"]


def test_topic_prefix_reaches_topics_and_consumer_groups() -> None:
    values = render_module().merge_values(
        everything_on_values(), {"config": {"topicPrefix": "staging."}}
    )
    docs = render_module().manifests(render_module().render(values))
    assert all(
        t["spec"]["topicName"].startswith("staging.notify.")
        for t in of_kind(docs, "KafkaTopic").values()
    )
    for scaled in of_kind(docs, "ScaledObject").values():
        assert scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"].startswith(
            "staging.notify-"
        )
    (config,) = [d for d in docs if d["metadata"]["name"] == "notify-config"]
    assert config["data"]["NOTIFY_TOPIC_PREFIX"] == "staging."


def test_strimzi_topics_need_a_cluster_name() -> None:
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)):
        render_module().render({"kafkaTopics": {"enabled": True}})


def test_a_templates_configmap_is_mounted_into_the_fanout_only() -> None:
    values = render_module().merge_values(
        everything_on_values(), {"templates": {"existingConfigMap": "my-templates"}}
    )
    docs = render_module().manifests(render_module().render(values))
    deployments = of_kind(docs, "Deployment")
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        if name.endswith("fanout"):
            assert env["NOTIFY_TEMPLATES_DIR"] == "/etc/notify/templates"
            assert "/etc/notify/templates" in mounts
            assert volumes["templates"]["configMap"]["name"] == "my-templates"
        else:
            assert "NOTIFY_TEMPLATES_DIR" not in env and "templates" not in volumes, name
    # Without it, nothing is mounted anywhere.
    plain = render_module().manifests(render_module().render(everything_on_values()))
    for d in of_kind(plain, "Deployment").values():
        assert "templates" not in {v["name"] for v in d["spec"]["template"]["spec"]["volumes"]}
