"""The grpc_server_* metrics, counted by MetricsInterceptor on a real grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from test_security import DEADLINE, TOKEN, RecordingService, bearer, call_kind, run, serving

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.grpc_metrics import MetricsInterceptor
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.security import BearerTokenInterceptor

SERVICE = "saemon.v1.MonitorService"
HEALTH = "grpc.health.v1.Health"
UNARY = ("unary", SERVICE, "GetRequestReport")
LIST = ("unary", SERVICE, "ListProbes")
INGEST = ("client_stream", SERVICE, "Ingest")
WATCH = ("server_stream", SERVICE, "WatchAlerts")
CHAT = ("bidi_stream", "saemon.test.Echo", "Chat")


class Samples:
    """Reads grpc_server_* samples of one method from a registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def value(self, name: str, method: tuple[str, str, str], **extra: str) -> float | None:
        grpc_type, service, name_ = method
        labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": name_, **extra}
        return self.registry.get_sample_value(name, labels)

    def started(self, method: tuple[str, str, str]) -> float | None:
        return self.value("grpc_server_started_total", method)

    def handled(self, method: tuple[str, str, str], code: str) -> float | None:
        return self.value("grpc_server_handled_total", method, grpc_code=code)

    def received(self, method: tuple[str, str, str]) -> float | None:
        return self.value("grpc_server_msg_received_total", method)

    def sent(self, method: tuple[str, str, str]) -> float | None:
        return self.value("grpc_server_msg_sent_total", method)

    def seconds_count(self, method: tuple[str, str, str]) -> float | None:
        return self.value("grpc_server_handling_seconds_count", method)

    def total(self, name: str) -> float:
        return sum(
            sample.value for metric in self.registry.collect() for sample in metric.samples if sample.name == name
        )


async def settled(samples: Samples) -> None:
    """Wait until every started RPC is counted as handled.

    grpc.aio runs done callbacks (where completion is recorded) after the RPC's task ends,
    which can be just after the client already has its answer.
    """
    for _ in range(500):
        if samples.total("grpc_server_handled_total") == samples.total("grpc_server_started_total"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("some RPCs never completed on the server")


def scenario(
    client: Callable[[grpc.aio.Channel], Awaitable[Any]],
    *,
    token: str | None = None,
    service: RecordingService | None = None,
) -> Samples:
    """Serve with MetricsInterceptor (and BearerTokenInterceptor if ``token``), run ``client``."""
    metrics = SidecarMetrics(CollectorRegistry())
    samples = Samples(metrics.registry)
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if token is not None:
        interceptors.append(BearerTokenInterceptor(token, metrics))

    async def main() -> None:
        async with (
            serving(service or RecordingService(), interceptors) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            await client(channel)
            await settled(samples)

    run(main())
    return samples


async def report(channel: grpc.aio.Channel, request_id: str, metadata: Any = ()) -> grpc.StatusCode:
    """GetRequestReport; returns the status code the client saw."""
    stub = monitor_pb2_grpc.MonitorServiceStub(channel)
    try:
        await stub.GetRequestReport(
            pb.GetRequestReportRequest(request_id=request_id), metadata=metadata, timeout=DEADLINE
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_counts_unary_client_stream_and_server_stream_calls_exactly() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        assert await report(channel, "known") == grpc.StatusCode.OK
        assert await report(channel, "unknown-id") == grpc.StatusCode.NOT_FOUND
        assert (await call_kind(channel, "client_stream")).batches_accepted == 5
        assert len(await call_kind(channel, "server_stream")) == 3

    s = scenario(client)
    assert s.started(UNARY) == 2
    assert s.handled(UNARY, "OK") == 1
    assert s.handled(UNARY, "NOT_FOUND") == 1
    assert s.received(UNARY) == 2
    assert s.sent(UNARY) == 1  # the NOT_FOUND call sent no response message
    assert s.seconds_count(UNARY) == 2

    assert s.started(INGEST) == 1
    assert s.received(INGEST) == 5
    assert s.sent(INGEST) == 1
    assert s.handled(INGEST, "OK") == 1
    assert s.seconds_count(INGEST) == 1

    assert s.started(WATCH) == 1
    assert s.received(WATCH) == 1
    assert s.sent(WATCH) == 3
    assert s.handled(WATCH, "OK") == 1
    assert s.seconds_count(WATCH) == 1

    assert s.total("grpc_server_handled_total") == 4


def test_counts_a_bidi_stream_message_by_message() -> None:
    s = scenario(lambda channel: call_kind(channel, "bidi_stream"))
    assert s.started(CHAT) == 1
    assert s.received(CHAT) == 2
    assert s.sent(CHAT) == 2
    assert s.handled(CHAT, "OK") == 1


def test_an_unhandled_exception_counts_as_unknown() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        assert await report(channel, "boom") == grpc.StatusCode.UNKNOWN

    s = scenario(client)
    assert s.handled(UNARY, "UNKNOWN") == 1
    assert s.handled(UNARY, "OK") is None
    assert s.sent(UNARY) == 0


def test_a_code_set_without_raising_is_the_final_code() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        assert await report(channel, "") == grpc.StatusCode.INVALID_ARGUMENT

    s = scenario(client)
    assert s.handled(UNARY, "INVALID_ARGUMENT") == 1
    assert s.sent(UNARY) == 0


def test_a_server_stream_the_client_cancels_counts_as_cancelled() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        call = stub.WatchAlerts(pb.WatchAlertsRequest(probes=["forever"]), timeout=DEADLINE)
        assert (await call.read()).decision.id == "d0"
        call.cancel()

    s = scenario(client)
    assert s.handled(WATCH, "CANCELLED") == 1
    assert s.sent(WATCH) == 1
    assert s.seconds_count(WATCH) == 1


def test_a_server_stream_past_its_deadline_counts_as_deadline_exceeded() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        call = stub.WatchAlerts(pb.WatchAlertsRequest(probes=["forever"]), timeout=1.0)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    s = scenario(client)
    # The client's deadline timer starts before the server's (which starts when the headers
    # arrive), so a busy server can see the client's cancel with a little of its own deadline
    # left: it then records CANCELLED, as go-grpc-prometheus would. Either way, exactly once.
    deadline, cancelled = s.handled(WATCH, "DEADLINE_EXCEEDED"), s.handled(WATCH, "CANCELLED")
    assert sorted([deadline or 0, cancelled or 0]) == [0, 1]
    assert s.sent(WATCH) == 1


def test_a_reader_writer_handler_has_its_writes_counted() -> None:
    # The asyncio health servicer's Watch writes through context.write() instead of yielding.
    async def client(channel: grpc.aio.Channel) -> None:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
        assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
        call.cancel()

    s = scenario(client)
    watch = ("server_stream", HEALTH, "Watch")
    assert s.sent(watch) == 1
    assert s.received(watch) == 1
    assert s.handled(watch, "CANCELLED") == 1


@pytest.mark.parametrize(
    ("kind", "method", "received"),
    [
        ("unary", LIST, 1),  # a unary request arrives before any handler runs
        ("server_stream", WATCH, 1),
        ("client_stream", INGEST, 0),  # the rejecting handler reads nothing
        ("bidi_stream", CHAT, 0),
    ],
)
def test_rejected_calls_count_as_unauthenticated(kind: str, method: tuple[str, str, str], received: int) -> None:
    service = RecordingService()

    async def client(channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_kind(channel, kind, bearer("wrong"), write=False)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

    s = scenario(client, token=TOKEN, service=service)
    assert service.calls == {}
    assert s.started(method) == 1
    assert s.handled(method, "UNAUTHENTICATED") == 1
    assert s.received(method) == received
    assert s.sent(method) == 0
    assert s.seconds_count(method) == 1
    assert s.registry.get_sample_value("saemon_events_dropped_total", {"reason": "unauthenticated"}) == 1


def test_authenticated_calls_and_health_checks_count_as_ok() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        assert await report(channel, "known", bearer(TOKEN)) == grpc.StatusCode.OK
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)

    s = scenario(client, token=TOKEN)
    assert s.handled(UNARY, "OK") == 1
    assert s.handled(("unary", HEALTH, "Check"), "OK") == 1
    assert s.total("grpc_server_handled_total") == 2


def test_an_unknown_method_is_not_counted() -> None:
    async def client(channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/saemon.v1.MonitorService/NoSuchMethod")(b"", timeout=DEADLINE)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED

    s = scenario(client)
    assert s.total("grpc_server_started_total") == 0


def test_initialize_creates_every_series_of_a_service_at_zero() -> None:
    metrics = SidecarMetrics(CollectorRegistry())
    MetricsInterceptor(metrics).initialize(pb.DESCRIPTOR.services_by_name["MonitorService"])
    s = Samples(metrics.registry)
    for method in (UNARY, LIST, INGEST, WATCH, ("unary", SERVICE, "ReloadProbes")):
        assert s.started(method) == 0
        assert s.received(method) == 0
        assert s.sent(method) == 0
        assert s.seconds_count(method) == 0
        for code in ("OK", "NOT_FOUND", "UNAUTHENTICATED", "UNKNOWN", "CANCELLED"):
            assert s.handled(method, code) == 0
