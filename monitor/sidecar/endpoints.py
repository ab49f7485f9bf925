"""The sidecar's HTTP listener: ``/metrics``, ``/healthz``, ``/readyz`` and, when on, the
forensic pages under ``/ui/`` (aiohttp)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from monitor.config import Settings
from monitor.errors import ConfigError
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.store import AuditStore
from monitor.sidecar.ui import ForensicUi


class HttpEndpoints:
    """Serves the metrics and the probes Kubernetes and Prometheus use."""

    def __init__(
        self,
        settings: Settings,
        metrics: SidecarMetrics,
        store: AuditStore,
        serving: Callable[[], bool],
        ui: ForensicUi | None = None,
    ) -> None:
        self.settings = settings
        self.ui = ui
        self.metrics = metrics
        self.store = store
        self.serving = serving
        self.address = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.ui is not None:
            self.ui.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        listen = self.settings.sidecar.http_listen
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            await runner.cleanup()
            raise ConfigError(f"sidecar.http_listen {listen!r}: expected host:port")
        site = web.TCPSite(runner, host, int(port))
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"sidecar.http_listen {host}:{port}: cannot listen ({exc.strerror}). "
                "Pick a free port (SAEMON_SIDECAR__HTTP_LISTEN)."
            ) from None
        self._runner = runner
        bound = runner.addresses[0]
        self.address = f"{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        if self.ui is not None:
            self.ui.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics_page(self, request: web.Request) -> web.Response:
        # Rendered on a worker thread: the event loop goes on serving gRPC (ingest, queries)
        # while a scrape walks every series (prometheus_client's metrics are thread-safe).
        # OpenMetrics when the scraper asks for it (Prometheus does with exemplar storage on):
        # only that format carries the exemplars (request ids of flagged requests).
        if "application/openmetrics-text" in request.headers.get("Accept", ""):
            body = await asyncio.to_thread(openmetrics.generate_latest, self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": openmetrics.CONTENT_TYPE_LATEST})
        body = await asyncio.to_thread(generate_latest, self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        """200 when serving; the body says which dependency is degraded. Redis down fails
        readiness only with redis.required_for_readiness (the sidecar gates the pod)."""
        serving, store = self.serving(), self.store
        checks = {"grpc": "ok" if serving else "not serving"}
        if store.enabled:
            checks["redis"] = "ok" if store.up else "down: buffering writes, alerting from memory"
        ready = serving and (store.up or not store.enabled or not self.settings.redis.required_for_readiness)
        body = json.dumps({"ready": ready, "checks": checks}) + "\n"
        return web.Response(status=200 if ready else 503, text=body, content_type="application/json")
