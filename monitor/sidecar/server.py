"""``saemon serve``: builds the sidecar from its settings, starts it, serves, stops it gracefully.

The composition root. What each part does lives in its own module: the gRPC methods
(:mod:`~monitor.sidecar.service`), the ingest queue and scoring task
(:mod:`~monitor.sidecar.pipeline`), the scorer and its request table
(:mod:`~monitor.sidecar.scorer`), where decisions go (:mod:`~monitor.sidecar.outlets`:
the audit store, the incident book, token text), the WatchAlerts fan-out
(:mod:`~monitor.sidecar.watch`), alert delivery (:mod:`~monitor.sidecar.delivery`), the
HTTP endpoints (:mod:`~monitor.sidecar.endpoints`) and the forensic pages on them
(:mod:`~monitor.sidecar.ui`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from monitor.config import Settings
from monitor.errors import ConfigError, PackError
from monitor.pack import PackSet, load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.alerts import IncidentBook
from monitor.sidecar.delivery import Delivery, receivers_from
from monitor.sidecar.endpoints import HttpEndpoints
from monitor.sidecar.grpc_metrics import MetricsInterceptor
from monitor.sidecar.metrics import GcPauses, SidecarMetrics
from monitor.sidecar.outlets import Outlets
from monitor.sidecar.pipeline import Pipeline
from monitor.sidecar.scorer import SEVERITY_LABELS, Scorer
from monitor.sidecar.security import (
    BearerTokenInterceptor,
    prepare_unix_socket,
    secure_unix_socket,
    server_credentials,
)
from monitor.sidecar.service import MonitorServicer, register
from monitor.sidecar.store import AuditStore, StoreUnavailable
from monitor.sidecar.token_text import TokenTexts
from monitor.sidecar.ui import ForensicUi, RecentDecisions
from monitor.sidecar.watch import WatchHub

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MonitorService"].full_name


class Sidecar:
    """The running sidecar: every part, wired once here."""

    def __init__(self, settings: Settings, metrics: SidecarMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics = metrics or SidecarMetrics()
        self.scorer = Scorer(settings.sidecar, metrics, served=[settings.model.name])
        ui = settings.sidecar.ui
        recent = RecentDecisions(ui.recent) if ui.enabled else None
        self.watch = WatchHub(settings.sidecar.watch_queue_size, [recent.add] if recent else [])
        receivers = receivers_from(settings)
        self.store = AuditStore(settings.redis, metrics, [r.name for r in receivers], on_event=self.watch.publish)
        self.store.models.add(settings.model.name)
        self.delivery = Delivery(settings, self.store, metrics, receivers)
        token_texts = TokenTexts(settings) if settings.redis.store_token_text else None
        self.incidents = IncidentBook(
            settings.alerts,
            on_change=self.store.save_incident,
            on_member=self.store.save_incident_member,
            request_pages=settings.sidecar.ui.enabled,
        )
        self.outlets = Outlets(self.store, self.incidents, token_texts, metrics)
        self.pipeline = Pipeline(self.scorer, self.outlets, metrics, settings.sidecar.ingest_queue_size)
        self.ui = (
            ForensicUi(settings, self.scorer, self.pipeline, self.store, self.incidents, self.watch, recent)
            if recent is not None
            else None
        )
        self.http = HttpEndpoints(settings, metrics, self.store, lambda: self.ready, self.ui)
        self.gc_pauses = GcPauses(metrics)
        self.grpc_address = ""
        self.unix_socket: Path | None = None
        self.ready = False
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()

    # -- packs ---------------------------------------------------------------------------

    def reload(self) -> PackSet:
        """(Re)load the probe pack directory, all or nothing; on error keep the old packs,
        set saemon_config_last_reload_successful to 0 and raise PackError naming the file."""
        try:
            packs = load_pack_dir(self.settings.sidecar.probes_dir)
            if self.scorer.packs.packs and not packs.packs:
                raise PackError(
                    f"the pack directory {self.settings.sidecar.probes_dir} now holds no pack "
                    f"(loaded: {', '.join(p.name for p in self.scorer.packs.packs)}); a reload never "
                    "turns monitoring off: put the packs back, or stop the sidecar"
                )
            self.scorer.set_packs(packs)
        except PackError:
            self.metrics.config_reload_ok.set(0)
            raise
        except Exception as exc:  # anything else reading the directory: the same outcome
            self.metrics.config_reload_ok.set(0)
            log.exception("reloading the probe packs failed")
            raise PackError(f"reading {self.settings.sidecar.probes_dir} failed: {type(exc).__name__}") from exc
        # Known label sets start at 0, so increase() and rate() see the first detection.
        for info in self.scorer.probe_infos():
            severity = SEVERITY_LABELS.get(info.severity, "warning")
            self.metrics.requests_flagged.labels(self.settings.model.name, info.name, severity)
        for _, probe in self.scorer.probes():
            if probe.may_abort:
                self.metrics.requests_aborted.labels(self.settings.model.name, probe.name)
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(time.time())
        log.info(
            "loaded %d probes from %d packs: %s",
            packs.probe_count,
            len(packs.packs),
            ", ".join(f"{p.name}@{p.version}" for p in packs.packs) or "none",
        )
        return packs

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.reload()  # invalid packs fail the start
        self.gc_pauses.install()
        await self.store.start()
        await self._restore_incidents()
        await self.delivery.start()
        server = self._grpc_server()
        self._bind_grpc(server)
        await server.start()
        self._server = server
        if self.unix_socket is not None:
            secure_unix_socket(self.unix_socket, self.settings.sidecar.socket_mode)
        self.pipeline.start()
        await self.http.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self.ready = True
        log.info("saemon sidecar serving gRPC on %s, HTTP on %s", self.grpc_address, self.http.address)

    def _grpc_server(self) -> grpc.aio.Server:
        cfg = self.settings.sidecar
        grpc_metrics = MetricsInterceptor(self.metrics)
        grpc_metrics.initialize(pb.DESCRIPTOR.services_by_name["MonitorService"])
        interceptors: list[grpc.aio.ServerInterceptor] = [grpc_metrics]
        token = self.settings.auth_token()
        if token is not None:
            interceptors.append(BearerTokenInterceptor(token, self.metrics))
        grpc_limit = max(cfg.max_message_bytes * 4, 16 << 20)
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", grpc_limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        servicer = MonitorServicer(
            self.settings, self.metrics, self.scorer, self.pipeline, self.store, self.watch, self.reload
        )
        register(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if cfg.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                server,
            )
        return server

    def _bind_grpc(self, server: grpc.aio.Server) -> None:
        address = self.settings.grpc_listen
        cfg = self.settings.sidecar
        if address.startswith("unix://"):
            path = Path(address[len("unix://") :])
            if not path.is_absolute():
                raise ConfigError(f"sidecar.grpc_listen {address!r}: use an absolute path, unix:///abs/path.sock")
            prepare_unix_socket(path)
            server.add_insecure_port(f"unix://{path}")
            self.unix_socket = path
            self.grpc_address = f"unix://{path}"
            return
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"sidecar.grpc_listen {address!r}: expected unix:///path.sock or host:port")
        if cfg.tls.cert_file is not None or cfg.tls.key_file is not None:
            bound = server.add_secure_port(address, server_credentials(cfg.tls))
        elif cfg.insecure_tcp:
            bound = server.add_insecure_port(address)
        else:
            raise ConfigError(
                f"sidecar.grpc_listen {address!r} is TCP without TLS. Set sidecar.tls.cert_file and "
                "key_file, or use a Unix socket, or set sidecar.insecure_tcp: true (loopback tests only)."
            )
        self.grpc_address = f"{host}:{bound}"

    async def _restore_incidents(self) -> None:
        """Open incidents the previous run kept in Redis: they resolve (and notify RESOLVED)
        when their requests end, or when those are not seen again for the idle window."""
        if not self.store.enabled:
            return
        try:
            saved = await self.store.load_incidents() if self.store.up else None
        except StoreUnavailable:
            saved = None
        if saved is None:
            log.warning(
                "Redis is not reachable at start: open incidents of the previous run are not "
                "restored, so their RESOLVED notifications will not be sent"
            )
            return
        restored = self.incidents.restore(*saved)
        if restored:
            log.info("restored %d open incident(s) from Redis; they resolve when their requests end", restored)
        self.metrics.incidents_active.set(len(self.incidents.active))

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING, finish in-flight calls, score what is queued, exit."""
        self.ready = False
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            self.watch.close_all()
            await self._server.stop(grace)
            self._server = None
        await self.pipeline.stop()
        await self.store.stop()
        await self.delivery.stop()
        await self.http.stop()
        self.gc_pauses.remove()
        if self.unix_socket is not None:
            self.unix_socket.unlink(missing_ok=True)


async def serve(settings: Settings) -> None:
    """Run the sidecar until SIGTERM or SIGINT; SIGHUP reloads the probe packs."""
    sidecar = Sidecar(settings)
    await sidecar.start()
    # What start-up made (modules, packs, the gRPC server) lives as long as the process:
    # out of the collector's generations, so full collections only walk request state.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload_on_hup() -> None:
        try:
            sidecar.reload()
        except Exception as exc:  # the handler must survive anything: the old packs serve on
            log.error("SIGHUP reload failed, old packs kept: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    await stop.wait()
    log.info("shutting down")
    await sidecar.stop()
