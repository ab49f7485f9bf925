"""`saemon serve` as a child process: for the demo, the integration tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.errors import SaemonError
from monitor.harness import free_port


class SidecarProcessError(SaemonError):
    """A `saemon serve` child process failed to start."""


class SidecarProcess:
    """Starts `saemon serve` with a YAML config; waits for /readyz; stops with SIGTERM."""

    def __init__(self, directory: Path, sidecar: dict, *, name: str = "sidecar", **sections: dict) -> None:
        """``sidecar`` is the sidecar section; ``sections`` are other top-level sections
        (``redis={...}``, ``alerts={...}``)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.http_port = free_port()
        self.settings: dict[str, Any] = {
            "home": str(directory / "home"),
            "sidecar": {"http_listen": f"127.0.0.1:{self.http_port}", **sidecar},
            **sections,
        }
        self.config = directory / f"{name}.yaml"
        self.write_config()
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def write_config(self) -> None:
        """Write ``settings`` to the config file (again, after a change before start)."""
        self.config.write_text(yaml.safe_dump(self.settings))

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30) -> SidecarProcess:
        # The child reads only its config file: SAEMON_* variables of this process stay out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAEMON_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "--config", str(self.config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SidecarProcessError(f"saemon serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise SidecarProcessError(f"saemon serve was not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (graceful) and wait; returns the exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """Scrape /metrics: {(sample name, frozenset(labels)): value}."""
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def readiness(self) -> tuple[int, dict]:
        """(/readyz status, its JSON body)."""
        try:
            with urllib.request.urlopen(f"{self.http}/readyz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_idle(self, timeout: float = 20) -> None:
        """Until the ingest queue is empty (everything received has been scored)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric("saemon_ingest_queue_depth") == 0:
                return
            time.sleep(0.02)
        raise AssertionError("the sidecar's ingest queue did not drain")

    def __enter__(self) -> SidecarProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.kill()
