"""``saemon serve``: the grpc.aio sidecar, its HTTP endpoints, start and graceful stop.

Ingest streams validate each batch (rejections are counted and reported in the stream's
response; the stream goes on) and put accepted ones into a bounded asyncio queue: when it
is full, ``await put`` stops reading the stream, so HTTP/2 flow control pushes back on the
client, whose own bounded queue then drops and counts. One task drains the queue into the
engine. Decisions go to the audit store (monitor.sidecar.store), which hands each one to
the WatchAlerts subscribers once it has its event id (at once while Redis is away), and to
the incident book, whose notifications the delivery workers send (monitor.sidecar.delivery).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.config import Settings
from monitor.errors import ConfigError, PackError
from monitor.probes.pack import PackSet, load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.alerts import IncidentBook
from monitor.sidecar.delivery import Delivery
from monitor.sidecar.engine import SEVERITY_LABELS, Engine, Rejected
from monitor.sidecar.grpc_metrics import MetricsInterceptor
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.security import (
    BearerTokenInterceptor,
    prepare_unix_socket,
    secure_unix_socket,
    server_credentials,
)
from monitor.sidecar.store import AuditStore, StoreUnavailable, stream_id
from monitor.sidecar.tokens import TokenTexts

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MonitorService"].full_name
SWEEP_SECONDS = 1.0


@dataclass(eq=False)
class _Subscriber:
    probes: frozenset[str]
    min_severity: int
    model_name: str
    queue: asyncio.Queue
    overflowed: bool = False
    #: After a replay: live decisions at or before this stream id were already sent.
    replayed_up_to: tuple[int, int] | None = None

    def wants(self, decision: pb.Decision) -> bool:
        return (
            (not self.probes or decision.probe in self.probes)
            and decision.severity >= self.min_severity
            and (not self.model_name or decision.model_name == self.model_name)
        )

    def fresh(self, decision: pb.Decision) -> bool:
        if self.replayed_up_to is None or not decision.event_id:
            return True
        return stream_id(decision.event_id) > self.replayed_up_to


_CLOSED = object()


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    async def Ingest(self, request_iterator, context: grpc.aio.ServicerContext) -> pb.IngestResponse:
        sidecar = self.sidecar
        metrics, engine, queue = sidecar.metrics, sidecar.engine, sidecar.queue
        limit = sidecar.settings.sidecar.max_message_bytes
        accepted, rejected, first_error = 0, Counter(), ""
        async for request in request_iterator:
            count = len(request.batches)
            metrics.batches_received.inc(count)
            if request.client_dropped:
                metrics.dropped.labels("client_queue_full").inc(request.client_dropped)
            if request.ByteSize() > limit:
                metrics.dropped.labels("oversized").inc(count)
                rejected["oversized"] += count
                first_error = first_error or (
                    f"IngestRequest of {request.ByteSize()} bytes exceeds sidecar.max_message_bytes "
                    f"({limit}); send fewer batches per message"
                )
                continue
            for batch in request.batches:
                try:
                    engine.validate(batch)
                except Rejected as exc:
                    metrics.dropped.labels(exc.reason).inc()
                    rejected[exc.reason] += 1
                    first_error = first_error or str(exc)
                    continue
                await queue.put(batch)
                accepted += 1
        if rejected:
            log.warning("ingest stream from %s: %d batches rejected %s; first: %s",
                        context.peer(), sum(rejected.values()), dict(rejected), first_error)  # fmt: skip
        return pb.IngestResponse(
            batches_accepted=accepted,
            batches_rejected=sum(rejected.values()),
            rejected_by_reason=dict(rejected),
            first_error=first_error,
        )

    async def GetRequestReport(self, request, context) -> pb.GetRequestReportResponse:
        if not request.request_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id is empty")
        # Decisions already queued for this request should be visible: score them first.
        await self.sidecar.drain()
        report = await self.sidecar.report(request.request_id, request.model_name)
        if report is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no request {request.request_id!r}: never seen, or its report expired "
                "(redis.report_ttl_seconds, or sidecar.finished_retention_seconds without Redis)",
            )
        return pb.GetRequestReportResponse(report=report)

    async def ListProbes(self, request, context) -> pb.ListProbesResponse:
        return pb.ListProbesResponse(probes=self.sidecar.engine.probe_infos())

    async def ReloadProbes(self, request, context) -> pb.ReloadProbesResponse:
        try:
            packs = self.sidecar.reload()
        except PackError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"reload failed, old packs kept: {exc}")
        return pb.ReloadProbesResponse(packs=[p.name for p in packs.packs], probes=packs.probe_count)

    async def WatchAlerts(self, request, context):
        subscriber = _Subscriber(
            frozenset(request.probes),
            request.min_severity,
            request.model_name,
            asyncio.Queue(maxsize=self.sidecar.settings.sidecar.watch_queue_size),
        )
        self.sidecar.subscribers.add(subscriber)
        try:
            if request.after_event_id:
                for decision in await self._replay(request, context):
                    if subscriber.wants(decision):
                        yield pb.WatchAlertsResponse(decision=decision)
                    subscriber.replayed_up_to = stream_id(decision.event_id)
                if subscriber.replayed_up_to is None:
                    subscriber.replayed_up_to = stream_id(request.after_event_id)
            while True:
                item = await subscriber.queue.get()
                if item is _CLOSED:
                    if subscriber.overflowed:
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            "this WatchAlerts stream fell more than sidecar.watch_queue_size "
                            "decisions behind; reconnect (decisions since then were not sent)",
                        )
                    return
                if subscriber.fresh(item):
                    yield pb.WatchAlertsResponse(decision=item)
        finally:
            self.sidecar.subscribers.discard(subscriber)

    async def _replay(self, request: pb.WatchAlertsRequest, context) -> list[pb.Decision]:
        try:
            stream_id(request.after_event_id)
        except ValueError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"after_event_id {request.after_event_id!r} is not a stream id like 1700000000000-0 "
                "(use a Decision.event_id you received)",
            )
        store = self.sidecar.store
        if not store.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "after_event_id needs the Redis audit store (set redis.url); watch without it for live decisions",
            )
        await self.sidecar.drain()
        models = [request.model_name] if request.model_name else sorted(store.models | {self.sidecar.settings.model.name})
        try:
            return await store.replay(request.after_event_id, models)
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot replay: {exc}; retry, or watch live without after_event_id")


@dataclass
class _Listeners:
    grpc_address: str = ""
    http_address: str = ""
    unix_socket: Path | None = None


class Sidecar:
    """The running sidecar: engine, queue, gRPC server, HTTP endpoints."""

    def __init__(self, settings: Settings, metrics: SidecarMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or SidecarMetrics()
        self.engine = Engine(settings.sidecar, self.metrics)
        self.queue: asyncio.Queue[pb.StepBatch] = asyncio.Queue(maxsize=settings.sidecar.ingest_queue_size)
        self.metrics.queue_capacity.set(settings.sidecar.ingest_queue_size)
        self.metrics.queue_depth.set_function(self.queue.qsize)
        self.subscribers: set[_Subscriber] = set()
        self.store = AuditStore(
            settings.redis, self.metrics, [r.name for r in settings.alerts.alertmanagers + settings.alerts.webhooks]
        )
        self.store.models.add(settings.model.name)
        self.store.on_event = self._fanout
        self.incidents = IncidentBook(settings.alerts)
        self.delivery = Delivery(settings, self.store, self.metrics)
        self.token_texts = TokenTexts(settings) if settings.redis.store_token_text else None
        self.listeners = _Listeners()
        self.ready = False
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []

    # -- packs ---------------------------------------------------------------------------

    def reload(self) -> PackSet:
        """(Re)load the probe pack directory; on error keep the old packs and re-raise."""
        try:
            packs = load_pack_dir(self.settings.sidecar.probes_dir)
        except PackError:
            self.metrics.config_reload_ok.set(0)
            raise
        self.engine.set_packs(packs)
        # Known label sets start at 0, so increase() and rate() see the first detection.
        for info in self.engine.probe_infos():
            severity = SEVERITY_LABELS.get(info.severity, "warning")
            self.metrics.requests_flagged.labels(self.settings.model.name, info.name, severity)
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(time.time())
        log.info("loaded %d probes from %d packs: %s", packs.probe_count, len(packs.packs),
                 ", ".join(f"{p.name}@{p.version}" for p in packs.packs) or "none")  # fmt: skip
        return packs

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.reload()  # invalid packs fail the start
        await self.store.start()
        await self.delivery.start()
        cfg = self.settings.sidecar
        grpc_metrics = MetricsInterceptor(self.metrics)
        grpc_metrics.initialize(pb.DESCRIPTOR.services_by_name["MonitorService"])
        interceptors = [grpc_metrics]
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
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(MonitorServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if cfg.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                server,
            )
        self._bind_grpc(server)
        await server.start()
        self._server = server
        if self.listeners.unix_socket is not None:
            secure_unix_socket(self.listeners.unix_socket, cfg.socket_mode)
        self._tasks = [
            asyncio.create_task(self._score(), name="saemon-score"),
            asyncio.create_task(self._sweep(), name="saemon-sweep"),
        ]
        await self._start_http()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self.ready = True
        log.info("saemon sidecar serving gRPC on %s, HTTP on %s",
                 self.listeners.grpc_address, self.listeners.http_address)  # fmt: skip

    def _bind_grpc(self, server: grpc.aio.Server) -> None:
        address = self.settings.grpc_listen
        cfg = self.settings.sidecar
        if address.startswith("unix://"):
            path = Path(address[len("unix://") :])
            if not path.is_absolute():
                raise ConfigError(f"sidecar.grpc_listen {address!r}: use an absolute path, unix:///abs/path.sock")
            prepare_unix_socket(path)
            server.add_insecure_port(f"unix://{path}")
            self.listeners.unix_socket = path
            self.listeners.grpc_address = f"unix://{path}"
            return
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"sidecar.grpc_listen {address!r}: expected unix:///path.sock or host:port"
            )
        if cfg.tls.cert_file is not None or cfg.tls.key_file is not None:
            bound = server.add_secure_port(address, server_credentials(cfg.tls))
        elif cfg.insecure_tcp:
            bound = server.add_insecure_port(address)
        else:
            raise ConfigError(
                f"sidecar.grpc_listen {address!r} is TCP without TLS. Set sidecar.tls.cert_file and "
                "key_file, or use a Unix socket, or set sidecar.insecure_tcp: true (loopback tests only)."
            )
        self.listeners.grpc_address = f"{host}:{bound}"

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = self.settings.sidecar.http_listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"sidecar.http_listen {self.settings.sidecar.http_listen!r}: expected host:port")
        site = web.TCPSite(runner, host, int(port))
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"sidecar.http_listen {host}:{port}: cannot listen ({exc.strerror}). "
                "Pick a free port (SAEMON_SIDECAR__HTTP_LISTEN)."
            ) from None
        self._http = runner
        bound = runner.addresses[0]
        self.listeners.http_address = f"{bound[0]}:{bound[1]}"

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING, finish in-flight calls, score what is queued, exit."""
        self.ready = False
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            for subscriber in list(self.subscribers):
                _close(subscriber)
            await self._server.stop(grace)
            self._server = None
        await self.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.store.stop()
        await self.delivery.stop()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self.listeners.unix_socket is not None:
            self.listeners.unix_socket.unlink(missing_ok=True)

    async def report(self, request_id: str, model_name: str = "") -> pb.RequestReport | None:
        """Live state while the request runs; then the audit store's copy; then memory's."""
        report = self.engine.report(request_id, active_only=True)
        if report is not None:
            return report
        models = [model_name] if model_name else sorted(self.store.models)
        try:
            report = await self.store.get_report(request_id, models)
        except StoreUnavailable:
            report = None
        return report if report is not None else self.engine.report(request_id)

    async def drain(self) -> None:
        """Score everything queued so far (used before a report and at shutdown)."""
        while not self.queue.empty():
            self._apply(self.queue.get_nowait())
            self.queue.task_done()

    # -- work ----------------------------------------------------------------------------

    async def _score(self) -> None:
        while True:
            batch = await self.queue.get()
            self._apply(batch)
            self.queue.task_done()

    def _apply(self, batch: pb.StepBatch) -> None:
        try:
            decisions = self.engine.apply(batch)
        except Exception:  # a bug must not stop scoring: count, log with context, go on
            self.metrics.dropped.labels("malformed").inc()
            log.exception("failed to score step %d of %s", batch.step, batch.model_name)
            return
        self._publish(decisions)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self._publish(self.engine.sweep())
            for notification in self.incidents.due():
                self.store.append_alert(notification)

    def _publish(self, decisions: list[pb.Decision]) -> None:
        """Record decisions, open incidents, close finished requests' reports and incidents."""
        store, incidents = self.store, self.incidents
        for decision in decisions:
            store.append_event(decision)
            notification = incidents.on_decision(decision)
            if notification is not None:
                store.append_alert(notification)
        for state in self.engine.drain_closed():
            store.append_report(state.to_proto())
            if state.token_ids is not None:
                self._keep_token_text(state)
            for notification in incidents.on_request_end(state.request_id):
                store.append_alert(notification)
        self.metrics.incidents_active.set(len(incidents.active))

    def _keep_token_text(self, state) -> None:
        """Text around the tokens that fired, redacted, under its own TTL (opt-in)."""
        token_ids, state.token_ids = state.token_ids, None
        if self.token_texts is None:
            return
        try:
            state.texts = self.token_texts.annotate(state.to_proto(), token_ids)
        except Exception:  # a tokenizer or redactor bug must not stop scoring
            self.metrics.token_text_errors.inc()
            log.exception("could not make the token text of request %s; not stored", state.request_id)
            return
        self.store.append_token_text(state.model_name, state.request_id, state.texts)

    def _fanout(self, decision: pb.Decision) -> None:
        """Hand one decision to every WatchAlerts subscriber that wants it."""
        for subscriber in self.subscribers:
            if subscriber.overflowed or not subscriber.wants(decision):
                continue
            try:
                subscriber.queue.put_nowait(decision)
            except asyncio.QueueFull:
                subscriber.overflowed = True
                _close(subscriber)

    # -- HTTP ----------------------------------------------------------------------------

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        """200 when serving; the body says which dependency is degraded. Redis down fails
        readiness only with redis.required_for_readiness (the sidecar gates the pod)."""
        checks = {"grpc": "ok" if self.ready else "not serving"}
        if self.store.enabled:
            checks["redis"] = "ok" if self.store.up else "down: buffering writes, alerting from memory"
        ready = self.ready and (self.store.up or not self.store.enabled or not self.settings.redis.required_for_readiness)
        body = json.dumps({"ready": ready, "checks": checks}) + "\n"
        return web.Response(status=200 if ready else 503, text=body, content_type="application/json")


def _close(subscriber: _Subscriber) -> None:
    """End a WatchAlerts stream: drop what it has not read and queue the end marker."""
    while not subscriber.queue.empty():
        subscriber.queue.get_nowait()
    subscriber.queue.put_nowait(_CLOSED)


async def serve(settings: Settings) -> None:
    """Run the sidecar until SIGTERM or SIGINT; SIGHUP reloads the probe packs."""
    sidecar = Sidecar(settings)
    await sidecar.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload_on_hup() -> None:
        try:
            sidecar.reload()
        except PackError as exc:
            log.error("SIGHUP reload failed, old packs kept: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    await stop.wait()
    log.info("shutting down")
    await sidecar.stop()
