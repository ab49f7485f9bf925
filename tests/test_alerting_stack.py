"""The shipped rules and routing with real Debian Prometheus and Alertmanager.

Prometheus scrapes a real `saemon serve` with the shipped rules, a synthetic ingest makes a
critical probe fire, the shipped SaemonProbeDetections rule fires, and Alertmanager (with the
shipped routing) delivers to a loopback webhook. The direct path too: the sidecar pushes its
own alert to the same Alertmanager's /api/v2/alerts and it reaches the same receiver.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from polling import wait_for
from receivers import HttpReceiver
from synthetic import batch, summary

from monitor.harness import free_port
from monitor.harness.sidecar import SidecarProcess
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.alerts import fingerprint

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MODEL = "SmolLM2-135M-Instruct"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or ALERTMANAGER is None,
    reason="needs Debian's prometheus and prometheus-alertmanager (scripts/setup.sh installs them)",
)


class Daemon:
    """A child process that is ready when ``ready_url`` answers 200."""

    def __init__(self, args: list[str], ready_url: str, log: Path) -> None:
        self.args, self.ready_url, self.log = args, ready_url, log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Daemon:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.args[0]} not ready:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def get_json(url: str) -> dict | list:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def alertmanager_config(receiver_url: str) -> dict:
    """The shipped routing, pointed at the test's receiver, with second-scale windows."""
    config = yaml.safe_load((REPO / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = receiver_url
    (saemon_route,) = config["route"]["routes"]
    saemon_route.update(group_wait="1s", group_interval="1s")
    return config


def prometheus_config(sidecar_http: str, alertmanager: str) -> dict:
    """The shipped scrape config's shape with loopback targets and 1 s intervals."""
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(REPO / "deploy" / "prometheus" / "rules" / "saemon.rules.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    config["scrape_configs"] = [c for c in config["scrape_configs"] if c["job_name"] == "saemon"]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [sidecar_http]
    return config


def payloads(receiver: HttpReceiver, alertname: str) -> list[dict]:
    return [r.json for r in receiver.received if any(a["labels"]["alertname"] == alertname for a in r.json["alerts"])]


def test_shipped_rule_fires_and_alertmanager_delivers_both_paths_to_the_webhook(tmp_path, packs):
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    with HttpReceiver() as receiver:
        (tmp_path / "am.yml").write_text(yaml.safe_dump(alertmanager_config(receiver.url + "/alerts")))
        alertmanager = Daemon(
            [
                ALERTMANAGER,
                f"--config.file={tmp_path / 'am.yml'}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            f"{am_url}/-/ready",
            tmp_path / "alertmanager.log",
        )
        sidecar = SidecarProcess(
            tmp_path / "sidecar",
            {"grpc_listen": f"unix://{tmp_path}/s.sock", "probes_dir": str(packs)},
            alerts={"alertmanagers": [{"name": "am", "url": am_url}], "runbook_url": "https://runbooks.example/saemon"},
        )
        with alertmanager, sidecar:
            (tmp_path / "prometheus.yml").write_text(
                yaml.safe_dump(prometheus_config(f"127.0.0.1:{sidecar.http_port}", f"127.0.0.1:{am_port}"))
            )
            prometheus = Daemon(
                [
                    PROMETHEUS,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                f"{prom_url}/-/ready",
                tmp_path / "prometheus.log",
            )
            with prometheus:
                query = f"{prom_url}/api/v1/query?query=" + urllib.parse.quote(
                    f'saemon_requests_flagged_total{{probe="safety_max", model_name="{MODEL}"}}'
                )
                # The pre-initialised 0 is scraped before the first detection, so increase() sees it.
                wait_for(lambda: get_json(query)["data"]["result"], what="the flagged counter scraped at 0")
                stub = monitor_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(f"unix://{tmp_path}/s.sock"))
                stub.Ingest(iter([pb.IngestRequest(batches=[batch([summary("r1", [0.9, 0.1], 5)])])]), timeout=10)

                rule = wait_for(
                    lambda: payloads(receiver, "SaemonProbeDetections"), 30, "the rule's alert at the webhook", 0.2
                )
                pushed = wait_for(lambda: payloads(receiver, "SaemonDeceptionDetected"), what="the pushed alert")
                rules = get_json(f"{prom_url}/api/v1/rules?type=alert")["data"]["groups"]
                states = {r["name"]: r["state"] for g in rules for r in g["rules"]}
                active = get_json(f"{am_url}/api/v2/alerts")
            logs = sidecar.log()

    assert states["SaemonProbeDetections"] == "firing" and states["SaemonMonitorDown"] == "inactive"
    payload = rule[0]
    assert payload["version"] == "4" and payload["receiver"] == "saemon-oncall" and payload["status"] == "firing"
    (alert,) = [a for a in payload["alerts"] if a["labels"]["alertname"] == "SaemonProbeDetections"]
    assert {k: alert["labels"][k] for k in ("model_name", "probe", "severity")} == {
        "model_name": MODEL,
        "probe": "safety_max",
        "severity": "critical",
    }
    assert alert["annotations"]["runbook_url"] == "deploy/RUNBOOK.md#saemonprobedetections"
    assert alert["annotations"]["summary"] == f"probe safety_max flagged requests on {MODEL}"
    assert "fired on about " in alert["annotations"]["description"]
    assert alert["generatorURL"].startswith("http://") and alert["fingerprint"] == fingerprint(alert["labels"])

    (direct,) = [a for a in pushed[0]["alerts"] if a["labels"]["alertname"] == "SaemonDeceptionDetected"]
    labels = {
        "alertname": "SaemonDeceptionDetected",
        "severity": "critical",
        "model_name": MODEL,
        "probe": "safety_max",
    }
    assert direct["labels"] == labels and direct["status"] == "firing"
    assert direct["fingerprint"] == fingerprint(labels)  # Alertmanager's own computation agrees with ours
    assert direct["annotations"]["request_id"] == "r1"
    assert direct["annotations"]["runbook_url"] == "https://runbooks.example/saemon"
    assert {a["labels"]["alertname"] for a in active} >= {"SaemonProbeDetections", "SaemonDeceptionDetected"}
    assert "Traceback" not in logs
