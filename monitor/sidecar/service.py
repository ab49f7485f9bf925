"""The gRPC servicer: ``saemon.v1.MonitorService``'s methods.

Ingest validates each batch (a rejection is counted and reported in the stream's response;
the stream goes on) and queues accepted ones for the pipeline. Queries answer with
canonical codes: NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION for a failed reload
(which keeps the old packs), UNAVAILABLE when a replay needs Redis and it is away.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import grpc

from monitor.config import Settings
from monitor.errors import PackError
from monitor.pack import PackSet
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.pipeline import Pipeline
from monitor.sidecar.scorer import Rejected, Scorer
from monitor.sidecar.store import AuditStore, StoreUnavailable, stream_id
from monitor.sidecar.watch import CLOSED, WatchHub

log = logging.getLogger(__name__)


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(
        self,
        settings: Settings,
        metrics: SidecarMetrics,
        scorer: Scorer,
        pipeline: Pipeline,
        store: AuditStore,
        watch: WatchHub,
        reload: Callable[[], PackSet],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.scorer = scorer
        self.pipeline = pipeline
        self.store = store
        self.watch = watch
        self.reload = reload

    async def Ingest(self, request_iterator, context: grpc.aio.ServicerContext) -> pb.IngestResponse:
        metrics, scorer, pipeline = self.metrics, self.scorer, self.pipeline
        limit = self.settings.sidecar.max_message_bytes
        accepted, rejected, first_error = 0, Counter[str](), ""
        async for request in request_iterator:
            count = len(request.batches)
            metrics.batches_received.inc(count)
            if request.client_dropped:
                metrics.dropped.labels("client_queue_full").inc(request.client_dropped)
            size = request.ByteSize()
            if size > limit:
                metrics.dropped.labels("oversized").inc(count)
                rejected["oversized"] += count
                first_error = first_error or (
                    f"IngestRequest of {size} bytes exceeds sidecar.max_message_bytes "
                    f"({limit}); send fewer batches per message"
                )
                continue
            for batch in request.batches:
                try:
                    columns = scorer.validate(batch)
                except Rejected as exc:
                    metrics.dropped.labels(exc.reason).inc()
                    rejected[exc.reason] += 1
                    first_error = first_error or str(exc)
                    continue
                await pipeline.put(batch, columns)
                accepted += 1
        if rejected:
            log.warning(
                "ingest stream from %s: %d batches rejected %s; first: %s",
                context.peer(),
                sum(rejected.values()),
                dict(rejected),
                first_error,
            )
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
        await self.pipeline.drain()
        report = await self._report(request.request_id, request.model_name)
        if report is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no request {request.request_id!r}: never seen, or its report expired "
                "(redis.report_ttl_seconds, or sidecar.finished_retention_seconds without Redis)",
            )
        return pb.GetRequestReportResponse(report=report)

    async def _report(self, request_id: str, model_name: str) -> pb.RequestReport | None:
        """Live state while the request runs; then the audit store's copy; then memory's."""
        report = self.scorer.report(request_id, active_only=True)
        if report is not None:
            return report
        models = [model_name] if model_name else sorted(self.store.models)
        try:
            report = await self.store.get_report(request_id, models)
        except StoreUnavailable:
            report = None
        return report if report is not None else self.scorer.report(request_id)

    async def ListProbes(self, request, context) -> pb.ListProbesResponse:
        return pb.ListProbesResponse(probes=self.scorer.probe_infos())

    async def ReloadProbes(self, request, context) -> pb.ReloadProbesResponse:
        try:
            packs = self.reload()
        except PackError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"reload failed, old packs kept: {exc}")
        return pb.ReloadProbesResponse(packs=[p.name for p in packs.packs], probes=packs.probe_count)

    async def WatchAlerts(self, request, context):
        subscriber = self.watch.subscribe(request)
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
                if item is CLOSED:
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
            self.watch.unsubscribe(subscriber)

    async def _replay(self, request: pb.WatchAlertsRequest, context) -> list[pb.Decision]:
        try:
            stream_id(request.after_event_id)
        except ValueError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"after_event_id {request.after_event_id!r} is not a stream id like 1700000000000-0 "
                "(use a Decision.event_id you received)",
            )
        store = self.store
        if not store.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "after_event_id needs the Redis audit store (set redis.url); watch without it for live decisions",
            )
        await self.pipeline.drain()
        models = [request.model_name] if request.model_name else sorted(store.models | {self.settings.model.name})
        try:
            return await store.replay(request.after_event_id, models)
        except StoreUnavailable as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"cannot replay: {exc}; retry, or watch live without after_event_id"
            )
            raise AssertionError("context.abort returned") from None
