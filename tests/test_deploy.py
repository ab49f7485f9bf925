"""The deployment files: Prometheus rules and config (promtool), Alertmanager (amtool),
Grafana dashboards and provisioning, docker compose, Kubernetes manifests and their wiring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.config import Settings
from monitor.sidecar.metrics import SidecarMetrics

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "saemon.rules.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
SHIPPED_ALERTS = {
    "SaemonMonitorDown",
    "SaemonProbeDetections",
    "SaemonEventsDropped",
    "SaemonPipelineStalled",
    "SaemonRedisDown",
    "SaemonAlertDeliveryFailing",
    "SaemonCoverageLow",
    "SaemonTokensUnscored",
    "SaemonRequestsUnjudged",
}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool (prometheus-alertmanager) missing")


def run(*args: str, cwd: Path = REPO) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def metric_names() -> set[str]:
    """Every sample name saemon exports (with _total, _bucket, ... suffixes)."""
    metrics = SidecarMetrics()
    metrics.declare_receivers(["r"])
    metrics.requests_flagged.labels("m", "p", "critical")
    metrics.probe_score.labels("m", "p")
    metrics.tokens_scored.labels("m", "response")
    metrics.tokens_unscored.labels("m", "reset")
    metrics.requests_unjudged.labels("m", "idle")
    metrics.requests_scored.labels("m")
    metrics.decisions.labels("m", "p", "critical", "fired")
    metrics.stream_length.labels("m", "events")
    metrics.consumer_lag.labels("m", "r")
    metrics.consumer_pending.labels("m", "r")
    for name in ("Unary", "client_stream"):
        metrics.grpc_handled.labels(name, "s", "m", "OK")
        metrics.grpc_handling_seconds.labels(name, "s", "m")
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def promql_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(saemon_[a-z_]+|saemon:[a-z0-9_:]+|vllm:[a-z_]+)", expr))


def recorded() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


# -- Prometheus and Alertmanager ----------------------------------------------------------


@needs_promtool
def test_rules_and_config_pass_promtool_checks_and_unit_tests():
    assert "SUCCESS: 12 rules found" in run("promtool", "check", "rules", str(RULES))
    run("promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert "SUCCESS" in run("promtool", "test", "rules", "saemon.rules.test.yml", cwd=RULES.parent)


def test_every_shipped_alert_is_unit_tested_documented_and_uses_known_metrics():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert set(alerts) == SHIPPED_ALERTS
    tests = yaml.safe_load((RULES.parent / "saemon.rules.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert tested == SHIPPED_ALERTS  # each has a test where it fires
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    known = metric_names() | recorded()
    for name, rule in alerts.items():
        assert set(rule["annotations"]) >= {"summary", "description", "runbook_url"}, name
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert f"## {name}\n" in runbook and anchor == name.lower(), name
        for metric in promql_metrics(rule["expr"]):
            assert metric in known or metric.startswith("vllm:"), (name, metric)


@needs_amtool
def test_alertmanager_config_routes_saemon_alerts_to_the_webhook():
    run("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    out = run(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file",
        str(DEPLOY / "alertmanager" / "alertmanager.yml"),
        "alertname=SaemonDeceptionDetected",
        "severity=critical",
        "probe=deception",
    )
    assert out.splitlines()[0] == "saemon-oncall"
    out = run(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file",
        str(DEPLOY / "alertmanager" / "alertmanager.yml"),
        "alertname=SomethingElse",
    )
    assert out.splitlines()[0] == "blackhole"


# -- Grafana ----------------------------------------------------------------------------------


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_are_file_provisionable_and_query_real_metrics(path):
    text = path.read_text()
    assert "${DS_" not in text and "__inputs" not in text  # only the import screen resolves those
    dashboard = json.loads(text)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"model_name", "probe"} <= set(variables)
    known = metric_names() | recorded()
    ids, queries = set(), 0
    for panel in panels(dashboard):
        assert panel["id"] not in ids
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queries += 1
            expr = target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"
            assert not re.search(r"\[\d+[smh]\]", expr), (panel["title"], "use $__rate_interval")
            for metric in promql_metrics(expr):
                assert metric in known or metric.startswith("vllm:"), (panel["title"], metric)
    assert queries >= 20
    used = {m for p in panels(dashboard) for t in p.get("targets", []) for m in promql_metrics(t["expr"])}
    for wanted in (
        "saemon_tokens_scored_total",
        "saemon_tokens_unscored_total",
        "saemon_requests_flagged_total",
        "saemon_probe_score_bucket",
        "saemon_events_dropped_total",
        "saemon_ingest_queue_depth",
        "saemon_redis_up",
        "saemon_alert_deliveries_total",
        "saemon:request_coverage:ratio_rate15m",
        "vllm:request_success_total",
        "vllm:num_requests_running",
    ):
        assert wanted in used, wanted


def test_grafana_provisioning_points_where_compose_mounts_the_dashboards():
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "saemon.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    assert mounts[path] == "../grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# -- docker compose -------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())


def test_compose_wires_vllm_saemon_redis_prometheus_alertmanager_and_grafana():
    services = compose()["services"]
    assert {"saemon", "vllm-cpu", "vllm-gpu", "redis", "prometheus", "alertmanager", "grafana"} <= set(services)
    base = DEPLOY / "compose"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (base / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (base / build["context"] / build["dockerfile"]).is_file()
            assert f"AS {build['target']}" in (base / build["context"] / build["dockerfile"]).read_text()
    # The sidecar's settings are valid and its socket is on the volume vLLM mounts.
    config = yaml.safe_load((base / "saemon.yaml").read_text())
    settings = Settings.model_validate(config)
    socket = settings.grpc_listen.removeprefix("unix://")
    for vllm in ("vllm-cpu", "vllm-gpu"):
        service = services[vllm]
        plugin = json.loads(
            service["command"][service["command"].index("--additional-config") + 1].replace(
                "${SAEMON_PACK:-safety.yaml}", "safety.yaml"
            )
        )
        assert plugin["saemon"]["sidecar"] == settings.grpc_listen
        assert "--no-enable-prefix-caching" not in service["command"]  # monitored with the cache on
        assert "saemon-socket:" + str(Path(socket).parent) in service["volumes"]
        assert service["networks"]["default"]["aliases"] == ["vllm"]  # Prometheus scrapes vllm:8000
    assert "saemon-socket:" + str(Path(socket).parent) in services["saemon"]["volumes"]
    assert settings.sidecar.http_listen.endswith(":9464") and "9464:9464" in services["saemon"]["ports"]
    assert settings.redis.url == "redis://redis:6379/0"
    assert settings.alerts.alertmanagers[0].url == "http://alertmanager:9093"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {c["job_name"]: c["static_configs"][0]["targets"] for c in prometheus["scrape_configs"]}
    assert targets == {"saemon": ["saemon:9464"], "vllm": ["vllm:8000"]}
    am = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    hook = am["receivers"][1]["webhook_configs"][0]["url"]
    assert hook.startswith("http://saemon-oncall-receiver:8080/")
    assert services["saemon-oncall-receiver"]["command"][:3] == ["receive-alerts", "--listen", "0.0.0.0:8080"]


# -- Kubernetes -------------------------------------------------------------------------------


def manifests() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(document), path
            out[(document["kind"], document["metadata"]["name"])] = document
    return out


def test_kubernetes_manifests_wire_the_native_sidecar_socket_probes_and_monitors():
    objects = manifests()
    deployment = objects[("Deployment", "vllm-saemon")]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: up before vLLM, stopped after
    (vllm,) = pod["spec"]["containers"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes["saemon-socket"]
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (sidecar, vllm)}
    assert mounts["saemon"]["saemon-socket"] == mounts["vllm"]["saemon-socket"]
    for container in (sidecar, vllm):
        assert set(mounts[container["name"]]) <= set(volumes)
    # The sidecar's own settings: valid, listening on the shared socket and the probed port.
    config_map = objects[("ConfigMap", volumes["saemon-config"]["configMap"]["name"])]
    settings = Settings.model_validate(yaml.safe_load(config_map["data"]["saemon.yaml"]))
    assert settings.grpc_listen == f"unix://{mounts['saemon']['saemon-socket']}/saemon.sock"
    assert str(settings.sidecar.probes_dir) == mounts["saemon"]["saemon-probes"]
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert settings.sidecar.http_listen == f"0.0.0.0:{ports['saemon-metrics']}"
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "saemon-metrics"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "saemon-metrics"}
    assert sidecar["resources"]["requests"]["cpu"] and sidecar["resources"]["limits"]["memory"]
    # vLLM's plugin talks to that socket, and its served name is saemon's model_name.
    args = vllm["args"]
    plugin = json.loads(args[args.index("--additional-config") + 1])["saemon"]
    assert plugin["sidecar"] == settings.grpc_listen
    assert plugin["pack"].startswith(mounts["vllm"]["saemon-probes"] + "/")
    assert f"--served-model-name={settings.model.name}" in args and "--no-enable-prefix-caching" not in args
    vllm_ports = {p["name"] for p in vllm["ports"]}
    # Service and monitors select the pod and name ports that exist.
    service = objects[("Service", "vllm-saemon")]
    assert service["spec"]["selector"] == labels
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports) | vllm_ports
    monitor = objects[("ServiceMonitor", "vllm-saemon")]
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    pod_monitor = objects[("PodMonitor", "vllm-saemon")]
    assert pod_monitor["spec"]["selector"]["matchLabels"] == labels
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= set(ports) | vllm_ports
    # The rules and dashboards travel as generated objects, identical to their sources.
    rule = objects[("PrometheusRule", "saemon")]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    dashboards = objects[("ConfigMap", "saemon-grafana-dashboards")]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {k: json.loads(v) for k, v in dashboards["data"].items()} == {
        p.name: json.loads(p.read_text()) for p in DASHBOARDS
    }


def test_kustomization_lists_existing_files_and_labels_what_the_operator_selects():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    (patch,) = kustomization["patches"]
    kinds = set(patch["target"]["kind"].split("|"))
    assert kinds == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    ops = yaml.safe_load(patch["patch"])
    assert ops[0]["path"].startswith("/metadata/labels/")


def test_generated_kubernetes_objects_are_up_to_date():
    run(sys.executable, "scripts/gen_deploy.py", "--check")


def test_flagged_request_panels_and_exemplars_link_to_the_request_pages():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "saemon-overview.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["saemon_ui"]["type"] == "textbox"
    linked = {
        p["title"]: p["fieldConfig"]["defaults"].get("links", [])
        for p in panels(dashboard)
        if "saemon_requests_flagged_total" in json.dumps(p.get("targets", []))
    }
    assert linked and all(
        links and links[0]["url"].startswith("${saemon_ui}/ui/?probe=${__field.labels.probe}")
        for links in linked.values()
    ), linked
    assert any(t.get("exemplar") for p in panels(dashboard) for t in p.get("targets", []))
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (destination,) = datasource["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "request_id" and "/ui/requests/${__value.raw}" in destination["url"]
    services = compose()["services"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    settings = yaml.safe_load((DEPLOY / "compose" / "saemon.yaml").read_text())
    assert settings["sidecar"]["ui"]["enabled"] and settings["sidecar"]["ui"]["basic_auth_user"]
    mounted = {v.split(":")[1] for v in services["saemon"]["volumes"]}
    assert settings["sidecar"]["ui"]["basic_auth_password_file"] in mounted
