"""The gRPC servicer: ``saemon.v1.MonitorService``'s methods.

Ingest validates each batch (a rejection is counted and reported in the stream's response;
the stream goes on) and queues accepted ones for the pipeline. Queries answer with
canonical codes: NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION for a failed reload
(which keeps the old packs), UNAVAILABLE when a replay needs Redis and it is away.

:func:`register` installs the methods with lenient request parsing: bytes that are not
the method's message answer INVALID_ARGUMENT with a short reason (grpc's default is UNKNOWN
with the parser's exception text), and an unexpected exception answers INTERNAL without
its text, which goes to the sidecar's log only.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

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

SERVICE = pb.DESCRIPTOR.services_by_name["MonitorService"]

#: Batches a client can have dropped between two of its messages (seconds apart).
MAX_CLIENT_DROPPED = 1 << 32


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
        rows_rejected = Counter[str]()
        async for request in request_iterator:
            count = len(request.batches)
            metrics.batches_received.inc(count)
            if request.client_dropped > MAX_CLIENT_DROPPED:
                # a counter a client cannot have reached: not counted, said
                first_error = first_error or (
                    f"IngestRequest.client_dropped {request.client_dropped} is above {MAX_CLIENT_DROPPED}: "
                    "not counted (it reports batches dropped since the client's previous message)"
                )
            elif request.client_dropped:
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
                if columns.rejected:
                    for reason, n in columns.rejected.items():
                        metrics.summaries_rejected.labels(reason).inc(n)
                    rows_rejected.update(columns.rejected)
                    first_error = first_error or columns.first_error
                await pipeline.put(batch, columns)
                accepted += 1
        if rejected or rows_rejected:
            log.warning(
                "ingest stream from %s: %d batches rejected %s, %d summaries rejected %s; first: %s",
                context.peer(),
                sum(rejected.values()),
                dict(rejected),
                sum(rows_rejected.values()),
                dict(rows_rejected),
                first_error,
            )
        return pb.IngestResponse(
            batches_accepted=accepted,
            batches_rejected=sum(rejected.values()),
            rejected_by_reason=dict(rejected),
            first_error=first_error,
            summaries_rejected=sum(rows_rejected.values()),
            summaries_rejected_by_reason=dict(rows_rejected),
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


class Undecodable:
    """A request whose bytes did not parse as the method's message."""

    __slots__ = ("message", "size")

    def __init__(self, message: str, size: int) -> None:
        self.message, self.size = message, size

    def details(self) -> str:
        return f"the request ({self.size} bytes) is not a valid {self.message} message"


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Undecodable(message_class.DESCRIPTOR.full_name, len(data))

    return parse


_INTERNAL = "internal error in the sidecar (logged there); retry, and report it if it persists"


async def _internal(method: str, context: grpc.aio.ServicerContext) -> None:
    """An unexpected error: logged here with its traceback, INTERNAL without its text there."""
    log.exception("saemon.v1.MonitorService/%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)


async def _parsed(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            # what came before it on the stream is kept (already queued)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details())
        yield request


def _guard_call(method: str, behavior: Callable, *, streaming_in: bool) -> Callable:
    """A method answering once (unary or client-streaming) behind the guards."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if streaming_in:
            request = _parsed(request, context)
        elif isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details())
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _internal(method, context)

    return call


def _guard_stream_out(method: str, behavior: Callable) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details())
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _internal(method, context)

    return call


def register(servicer: MonitorServicer, server: grpc.aio.Server) -> None:
    """Add the service to ``server`` (in place of the generated add_..._to_server)."""
    handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            if method.client_streaming:
                raise NotImplementedError(f"{method.name}: bidirectional streams are not guarded yet")
            make, guarded = grpc.unary_stream_rpc_method_handler, _guard_stream_out(method.name, behavior)
        elif method.client_streaming:
            make = grpc.stream_unary_rpc_method_handler
            guarded = _guard_call(method.name, behavior, streaming_in=True)
        else:
            make, guarded = grpc.unary_unary_rpc_method_handler, _guard_call(method.name, behavior, streaming_in=False)
        handlers[method.name] = make(
            guarded,
            request_deserializer=_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
