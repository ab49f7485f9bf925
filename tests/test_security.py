"""Bearer token, TLS / mTLS and Unix socket handling, against real grpc.aio servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import CollectorRegistry
from tls import TlsFiles, make_pki

from monitor.config import TlsSettings
from monitor.errors import ConfigError
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.security import (
    BearerTokenInterceptor,
    prepare_unix_socket,
    secure_unix_socket,
    server_credentials,
)

TOKEN = "s3cret-token-for-tests"
DEADLINE = 5.0
T = TypeVar("T")

# A bidirectional method on raw bytes: MonitorService has none.
ECHO_CHAT = "/saemon.test.Echo/Chat"


class RecordingService(monitor_pb2_grpc.MonitorServiceServicer):
    """A tiny MonitorService that records every call it receives."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.batches = 0
        self.never_set = asyncio.Event()  # WatchAlerts(probes=["forever"]) waits on it

    async def ListProbes(self, request: pb.ListProbesRequest, context: Any) -> pb.ListProbesResponse:
        self.calls["ListProbes"] += 1
        return pb.ListProbesResponse(probes=[pb.ProbeInfo(name="deception", pack="test-pack")])

    async def GetRequestReport(self, request: pb.GetRequestReportRequest, context: Any) -> Any:
        self.calls["GetRequestReport"] += 1
        if request.request_id == "known":
            return pb.GetRequestReportResponse(report=pb.RequestReport(request_id="known"))
        if request.request_id == "boom":
            raise RuntimeError("a bug in the servicer")
        if request.request_id == "":
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("request_id is empty")
            return pb.GetRequestReportResponse()
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no request {request.request_id!r}")

    async def Ingest(self, request_iterator: AsyncIterator[pb.IngestRequest], context: Any) -> Any:
        self.calls["Ingest"] += 1
        async for request in request_iterator:
            self.batches += len(request.batches)
        return pb.IngestResponse(batches_accepted=self.batches)

    async def WatchAlerts(self, request: pb.WatchAlertsRequest, context: Any) -> AsyncIterator[Any]:
        self.calls["WatchAlerts"] += 1
        for i in range(3):
            yield pb.WatchAlertsResponse(decision=pb.Decision(id=f"d{i}"))
            if list(request.probes) == ["forever"]:
                await self.never_set.wait()


async def _echo_chat(request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for message in request_iterator:
        yield message


ECHO_HANDLER = grpc.method_handlers_generic_handler(
    "saemon.test.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(_echo_chat)}
)


def run(coro: Awaitable[T]) -> T:
    """Run one test's coroutine on a fresh event loop, bounded so a hang fails fast."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout=20)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(
    service: RecordingService,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    address: str = "127.0.0.1:0",
) -> AsyncIterator[int]:
    """A started grpc.aio server with the service, health and echo; yields the bound port."""
    server = grpc.aio.server(interceptors=list(interceptors))
    monitor_pb2_grpc.add_MonitorServiceServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    server.add_generic_rpc_handlers((ECHO_HANDLER,))
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def call_kind(
    channel: grpc.aio.Channel, kind: str, metadata: Sequence[tuple[str, str]] = (), *, write: bool = True
) -> Any:
    """Make one call of the given RPC kind and return what the client received.

    ``write=False`` opens a client or bidi stream without writing to it. Calls the server
    rejects use it: a grpc.aio client whose write races with the server's early status
    reports INTERNAL "Internal error from Core" instead of that status (grpc/grpc#36066).
    """
    stub = monitor_pb2_grpc.MonitorServiceStub(channel)
    md = tuple(metadata)
    if kind == "unary":
        return await stub.ListProbes(pb.ListProbesRequest(), metadata=md, timeout=DEADLINE)
    if kind == "server_stream":
        call = stub.WatchAlerts(pb.WatchAlertsRequest(), metadata=md, timeout=DEADLINE)
        return [response async for response in call]
    if kind == "client_stream":
        if not write:
            return await stub.Ingest(metadata=md, timeout=DEADLINE)
        requests = [pb.IngestRequest(batches=[pb.StepBatch(step=i)]) for i in range(5)]
        return await stub.Ingest(iter(requests), metadata=md, timeout=DEADLINE)
    if kind == "bidi_stream":
        chat = channel.stream_stream(ECHO_CHAT)
        if not write:
            return await chat(metadata=md, timeout=DEADLINE).read()
        return [message async for message in chat(iter([b"a", b"b"]), metadata=md, timeout=DEADLINE)]
    raise AssertionError(kind)


RPC_KINDS = ["unary", "server_stream", "client_stream", "bidi_stream"]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


def unauthenticated_call(kind: str, metadata: Sequence[tuple[str, str]]):
    """(status code, details, service calls, dropped counter) after one call with ``metadata``."""
    service = RecordingService()
    metrics = SidecarMetrics(CollectorRegistry())

    async def scenario() -> tuple[grpc.StatusCode, str]:
        async with (
            serving(service, [BearerTokenInterceptor(TOKEN, metrics)]) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call_kind(channel, kind, metadata, write=False)
        return raised.value.code(), raised.value.details()

    code, details = run(scenario())
    dropped = metrics.registry.get_sample_value("saemon_events_dropped_total", {"reason": "unauthenticated"})
    return code, details, service, dropped


# --- bearer token ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", RPC_KINDS)
def test_a_call_without_token_is_unauthenticated_and_never_reaches_the_service(kind: str) -> None:
    code, details, service, dropped = unauthenticated_call(kind, ())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "missing 'authorization' metadata" in details
    assert "Bearer <token>" in details and "sidecar.auth_token_file" in details
    assert service.calls == {} and service.batches == 0
    assert dropped == 1


@pytest.mark.parametrize("kind", RPC_KINDS)
def test_a_call_with_a_wrong_token_is_unauthenticated_and_never_reaches_the_service(kind: str) -> None:
    code, details, service, dropped = unauthenticated_call(kind, bearer("not-the-token"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token is wrong" in details
    assert "not-the-token" not in details and TOKEN not in details
    assert service.calls == {} and service.batches == 0
    assert dropped == 1


def test_a_token_that_is_a_prefix_of_the_right_one_is_rejected() -> None:
    code, _, service, _ = unauthenticated_call("unary", bearer(TOKEN[:-1]))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert service.calls == {}


def test_a_non_bearer_authorization_is_unauthenticated() -> None:
    code, details, service, dropped = unauthenticated_call("unary", (("authorization", f"Basic {TOKEN}"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "not a bearer token" in details and TOKEN not in details
    assert service.calls == {} and dropped == 1


@pytest.mark.parametrize("kind", RPC_KINDS)
def test_the_right_token_reaches_the_service(kind: str) -> None:
    service = RecordingService()
    metrics = SidecarMetrics(CollectorRegistry())

    async def scenario() -> Any:
        async with (
            serving(service, [BearerTokenInterceptor(TOKEN, metrics)]) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            return await call_kind(channel, kind, bearer(TOKEN))

    result = run(scenario())
    expected = {
        "unary": lambda r: [p.name for p in r.probes] == ["deception"],
        "server_stream": lambda r: [m.decision.id for m in r] == ["d0", "d1", "d2"],
        "client_stream": lambda r: r.batches_accepted == 5,
        "bidi_stream": lambda r: r == [b"a", b"b"],
    }[kind]
    assert expected(result)
    assert metrics.registry.get_sample_value("saemon_events_dropped_total", {"reason": "unauthenticated"}) == 0


def test_the_scheme_name_is_case_insensitive() -> None:
    service = RecordingService()

    async def scenario() -> Any:
        async with (
            serving(service, [BearerTokenInterceptor(TOKEN)]) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            return await call_kind(channel, "unary", (("authorization", f"bearer {TOKEN}"),))

    assert len(run(scenario()).probes) == 1


def test_the_health_check_needs_no_token() -> None:
    service = RecordingService()
    metrics = SidecarMetrics(CollectorRegistry())

    async def scenario() -> Any:
        async with (
            serving(service, [BearerTokenInterceptor(TOKEN, metrics)]) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            return await health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)

    assert run(scenario()).status == health_pb2.HealthCheckResponse.SERVING
    assert metrics.registry.get_sample_value("saemon_events_dropped_total", {"reason": "unauthenticated"}) == 0


@pytest.mark.parametrize("token", ["", " padded ", "line\n"])
def test_an_empty_or_padded_token_is_a_config_error(token: str) -> None:
    with pytest.raises(ConfigError, match=r"sidecar.auth_token_file"):
        BearerTokenInterceptor(token)


# --- TLS and mTLS ---------------------------------------------------------------------


def _tls_call(
    credentials: grpc.ServerCredentials, channel_credentials: grpc.ChannelCredentials
) -> tuple[Any, RecordingService]:
    """ListProbes over TLS; returns the response or the AioRpcError, and the service."""
    service = RecordingService()

    async def scenario() -> Any:
        async with (
            serving(service, credentials=credentials) as port,
            grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials) as channel,
        ):
            try:
                return await call_kind(channel, "unary")
            except grpc.aio.AioRpcError as error:
                return error

    return run(scenario()), service


def test_tls_serves_a_client_that_trusts_the_ca(pki: TlsFiles) -> None:
    credentials = server_credentials(TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key))
    result, service = _tls_call(credentials, grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes()))
    assert isinstance(result, pb.ListProbesResponse) and len(result.probes) == 1
    assert service.calls["ListProbes"] == 1


def test_tls_is_refused_by_a_client_that_does_not_trust_the_ca(tmp_path: Path, pki: TlsFiles) -> None:
    other_ca = make_pki(tmp_path / "other").ca_cert
    credentials = server_credentials(TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key))
    result, service = _tls_call(credentials, grpc.ssl_channel_credentials(root_certificates=other_ca.read_bytes()))
    assert isinstance(result, grpc.aio.AioRpcError)
    assert result.code() == grpc.StatusCode.UNAVAILABLE
    assert service.calls == {}


def test_mtls_rejects_a_client_without_a_certificate(pki: TlsFiles) -> None:
    credentials = server_credentials(
        TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca_cert)
    )
    result, service = _tls_call(credentials, grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes()))
    assert isinstance(result, grpc.aio.AioRpcError)
    assert result.code() == grpc.StatusCode.UNAVAILABLE
    assert service.calls == {}


def test_mtls_accepts_a_client_certificate_signed_by_the_ca(pki: TlsFiles) -> None:
    credentials = server_credentials(
        TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca_cert)
    )
    result, service = _tls_call(
        credentials,
        grpc.ssl_channel_credentials(
            root_certificates=pki.ca_cert.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        ),
    )
    assert isinstance(result, pb.ListProbesResponse)
    assert service.calls["ListProbes"] == 1


def test_server_credentials_without_files_names_both_fields() -> None:
    with pytest.raises(ConfigError, match=r"sidecar\.tls\.cert_file and sidecar\.tls\.key_file"):
        server_credentials(TlsSettings())


def test_server_credentials_with_only_a_certificate_names_the_key_field(pki: TlsFiles) -> None:
    with pytest.raises(ConfigError, match=r"sidecar\.tls\.key_file is not set"):
        server_credentials(TlsSettings(cert_file=pki.server_cert))


def test_server_credentials_with_only_a_key_names_the_certificate_field(pki: TlsFiles) -> None:
    with pytest.raises(ConfigError, match=r"sidecar\.tls\.cert_file is not set"):
        server_credentials(TlsSettings(key_file=pki.server_key))


@pytest.mark.parametrize("field", ["cert_file", "key_file", "client_ca_file"])
def test_server_credentials_with_a_missing_file_names_the_field_and_path(
    field: str, tmp_path: Path, pki: TlsFiles
) -> None:
    files = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca_cert}
    missing = tmp_path / "nope.pem"
    files[field] = missing
    with pytest.raises(ConfigError, match=rf"sidecar\.tls\.{field} {missing}: cannot read it"):
        server_credentials(TlsSettings(**files))


def test_server_credentials_with_a_file_that_is_not_pem_names_the_field(tmp_path: Path, pki: TlsFiles) -> None:
    der = tmp_path / "server.der"
    der.write_bytes(b"\x30\x82\x01\x00not pem")
    with pytest.raises(ConfigError, match=r"sidecar\.tls\.cert_file .*not a PEM file"):
        server_credentials(TlsSettings(cert_file=der, key_file=pki.server_key))


# --- Unix socket ----------------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Any:
    """A short directory for sockets: tmp_path can exceed the 107-byte sun_path limit."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="saemon-") as directory:
        yield Path(directory)


def test_prepare_unix_socket_removes_a_stale_socket(socket_dir: Path) -> None:
    path = socket_dir / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(os.fspath(path))  # bound, never listening, closed: what a killed server leaves
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    prepare_unix_socket(path)
    assert not path.exists()


def test_prepare_unix_socket_refuses_a_regular_file(socket_dir: Path) -> None:
    path = socket_dir / "s.sock"
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        prepare_unix_socket(path)
    assert path.read_text() == "not a socket"


def test_prepare_unix_socket_refuses_a_socket_a_live_server_listens_on(socket_dir: Path) -> None:
    path = socket_dir / "s.sock"

    async def scenario() -> None:
        async with serving(RecordingService(), address=f"unix://{path}"):
            with pytest.raises(ConfigError, match="another server is listening"):
                prepare_unix_socket(path)
            assert stat.S_ISSOCK(os.lstat(path).st_mode)

    run(scenario())


def test_prepare_unix_socket_creates_the_parent_directory_private(socket_dir: Path) -> None:
    path = socket_dir / "run" / "s.sock"
    prepare_unix_socket(path)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
    assert not path.exists()


def test_prepare_unix_socket_refuses_a_path_too_long_for_a_socket(socket_dir: Path) -> None:
    with pytest.raises(ConfigError, match="longer than the 107 bytes"):
        prepare_unix_socket(socket_dir / ("x" * 120))


def test_secure_unix_socket_sets_the_mode_and_the_socket_still_serves(socket_dir: Path) -> None:
    path = socket_dir / "s.sock"

    async def scenario() -> Any:
        prepare_unix_socket(path)
        async with serving(RecordingService(), address=f"unix://{path}"):
            secure_unix_socket(path, 0o600)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
                return await call_kind(channel, "unary")

    assert len(run(scenario()).probes) == 1


def test_secure_unix_socket_on_a_missing_path_is_a_config_error(socket_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"sidecar.socket_mode"):
        secure_unix_socket(socket_dir / "missing.sock", 0o600)
