"""SidecarClient against real gRPC servers: delivery, drops, reconnection, auth, close."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from tls import make_pki

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.vllm.client import SidecarClient

# Short enough that rotation and reconnection happen many times within a test.
FAST = {"stream_max_seconds": 0.2, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.1}


def batch(i: int, pack: str = "p") -> pb.StepBatch:
    return pb.StepBatch(
        model_name="m",
        pack=pack,
        pack_version="1",
        step=i,
        requests=[
            pb.RequestSummary(
                request_id=f"r{i}",
                scope=pb.TOKEN_SCOPE_RESPONSE,
                first_position=i,
                num_tokens=1,
                max=[0.5],
                argmax_position=[i],
                sum=[0.5],
                count_above=[1],
            )
        ],
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(0.01)


class RecordingServicer(monitor_pb2_grpc.MonitorServiceServicer):
    """Records every batch it receives; optionally checks a bearer token and rejects unknown packs."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.steps: list[int] = []
        self.client_dropped = 0
        self.calls = 0
        self.authorization: list[str | None] = []

    def Ingest(self, request_iterator: Iterator[pb.IngestRequest], context: grpc.ServicerContext) -> pb.IngestResponse:
        authorization = dict(context.invocation_metadata()).get("authorization")
        with self.lock:
            self.calls += 1
            self.authorization.append(authorization)
        if self.token is not None and authorization != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        accepted, rejected, first_error = 0, 0, ""
        for request in request_iterator:
            with self.lock:
                self.client_dropped += request.client_dropped
                for b in request.batches:
                    if b.pack != "p":
                        rejected += 1
                        first_error = first_error or f"unknown pack {b.pack!r}"
                        continue
                    self.steps.append(b.step)
                    accepted += 1
        return pb.IngestResponse(
            batches_accepted=accepted,
            batches_rejected=rejected,
            rejected_by_reason={"unknown_pack": rejected} if rejected else {},
            first_error=first_error,
        )

    def received(self) -> list[int]:
        with self.lock:
            return list(self.steps)


@dataclass(frozen=True)
class Served:
    """A running test server and the port it bound (0 for a Unix socket)."""

    server: grpc.Server
    executor: ThreadPoolExecutor
    port: int

    def stop(self) -> None:
        self.server.stop(grace=None).wait()
        self.executor.shutdown(wait=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start real gRPC servers with a servicer on an address; stops them all at the end."""
    running: list[Served] = []

    def start(servicer: RecordingServicer, address: str, credentials: grpc.ServerCredentials | None = None) -> Served:
        executor = ThreadPoolExecutor(max_workers=4)
        server = grpc.server(executor)
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(servicer, server)
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        server.start()
        running.append(Served(server, executor, port))
        return running[-1]

    yield start
    for served in running:
        served.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., SidecarClient]]:
    """Build and start SidecarClients; closes them all at the end."""
    clients: list[SidecarClient] = []

    def build(target: str, **kwargs: Any) -> SidecarClient:
        client = SidecarClient(target, **kwargs)
        clients.append(client)
        client.start()
        return client

    yield build
    for client in clients:
        client.close(timeout=1)


def unix_target(tmp_path: Path) -> str:
    return f"unix://{tmp_path / 'sidecar.sock'}"


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_all_batches_arrive_in_order_and_are_confirmed(transport, tmp_path, serve, make_client):
    servicer = RecordingServicer()
    if transport == "unix":
        target = unix_target(tmp_path)
        serve(servicer, target)
    else:
        target = f"127.0.0.1:{serve(servicer, '127.0.0.1:0').port}"
    client = make_client(target, max_batches_per_message=16)

    assert all(client.submit(batch(i)) for i in range(300))
    client.close()

    assert servicer.received() == list(range(300))
    stats = client.stats()
    assert stats.submitted == stats.sent == stats.accepted == 300
    assert stats.dropped == stats.rejected == stats.unconfirmed == stats.stream_errors == 0
    assert servicer.client_dropped == stats.dropped
    assert stats.connected
    assert stats.queue_depth == 0


def test_submit_never_blocks_and_counts_drops_when_no_sidecar_listens(tmp_path, make_client):
    client = make_client(unix_target(tmp_path), queue_size=50)

    results = [client.submit(batch(i)) for i in range(150)]

    assert results == [True] * 50 + [False] * 100
    stats = client.stats()
    assert (stats.submitted, stats.dropped, stats.sent) == (150, 100, 0)
    assert stats.queue_depth == stats.queue_capacity == 50
    assert not stats.connected


def test_close_gives_up_after_its_timeout_and_counts_unsent_batches_as_dropped(tmp_path):
    client = SidecarClient(unix_target(tmp_path), queue_size=20)
    client.start()
    for i in range(20):
        client.submit(batch(i))

    client.close(timeout=0.2)

    stats = client.stats()
    assert (stats.dropped, stats.sent, stats.queue_depth) == (20, 0, 0)


def test_a_client_started_before_the_sidecar_connects_when_it_appears(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    client = make_client(target, queue_size=10, **FAST)
    results = [client.submit(batch(i)) for i in range(15)]
    wait_until(lambda: client.stats().stream_errors >= 1)
    assert not client.stats().connected

    servicer = RecordingServicer()
    serve(servicer, target)

    wait_until(lambda: len(servicer.received()) == 10)
    wait_until(lambda: client.stats().connected)
    assert results == [True] * 10 + [False] * 5
    assert servicer.received() == list(range(10))
    assert servicer.client_dropped == client.stats().dropped == 5
    assert client.stats().reconnects == 1


def test_drops_made_before_submit_are_reported_like_the_clients_own(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    servicer = RecordingServicer()
    serve(servicer, target)
    client = make_client(target, **FAST)
    client.count_dropped(3)  # e.g. the plugin's hand-over queue was full for three steps
    assert client.submit(batch(0))
    wait_until(lambda: servicer.received() == [0])
    stats = client.stats()
    assert (stats.submitted, stats.dropped) == (4, 3)
    assert servicer.client_dropped == 3


def test_an_item_of_several_batches_counts_each_when_dropped(tmp_path, serve, make_client):
    """A step of two packs encodes to two batches: dropped, it counts two, like sent would."""
    target = unix_target(tmp_path)
    servicer = RecordingServicer()
    serve(servicer, target)
    client = make_client(
        target, queue_size=1, encode=lambda i: [batch(i, "a"), batch(i, "b")], batches_of=lambda i: 2, **FAST
    )
    assert client.submit(0)
    wait_until(lambda: client.stats().sent == 2)
    client.close(timeout=1)
    assert not client.submit(1)  # closed: dropped
    stats = client.stats()
    assert (stats.submitted, stats.sent, stats.dropped) == (2, 2, 2)


def test_the_client_reconnects_when_the_sidecar_restarts_on_the_same_socket(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    first = RecordingServicer()
    first_server = serve(first, target)
    # A long stream_max keeps the first stream open, so the restart breaks it mid-stream.
    client = make_client(
        target,
        stream_max_seconds=20,
        rpc_timeout_seconds=60,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.1,
    )
    for i in range(50):
        client.submit(batch(i))
    wait_until(lambda: len(first.received()) == 50)

    first_server.stop()
    wait_until(lambda: client.stats().stream_errors >= 1)
    for i in range(50, 100):  # queued while the sidecar is away
        client.submit(batch(i))
    second = RecordingServicer()
    serve(second, target)
    for i in range(100, 150):
        client.submit(batch(i))
    wait_until(lambda: 149 in second.received())
    client.close()

    stats = client.stats()
    assert stats.reconnects >= 1 and stats.stream_errors >= 1
    for servicer in (first, second):
        steps = servicer.received()
        assert steps == sorted(set(steps)), "a server saw a batch twice or out of order"
    received = len(first.received()) + len(second.received())
    assert received <= stats.submitted == 150
    assert received + stats.dropped + stats.unconfirmed >= stats.submitted
    assert stats.unconfirmed >= 50, "the batches of the broken stream cannot be confirmed"


def test_streams_rotate_so_delivery_is_confirmed_without_closing(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    servicer = RecordingServicer()
    serve(servicer, target)
    client = make_client(target, **FAST)

    for i in range(10):
        client.submit(batch(i))
    wait_until(lambda: client.stats().accepted == 10)
    for i in range(10, 20):
        client.submit(batch(i))
    wait_until(lambda: client.stats().accepted == 20)

    assert servicer.calls >= 2
    assert servicer.received() == list(range(20))


def test_the_sidecars_rejections_are_counted_by_reason(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    serve(RecordingServicer(), target)
    client = make_client(target)

    for i in range(7):
        client.submit(batch(i, pack="p" if i % 3 else "nope"))
    client.close()

    stats = client.stats()
    assert (stats.accepted, stats.rejected, stats.unconfirmed) == (4, 3, 0)
    assert dict(stats.rejected_by_reason) == {"unknown_pack": 3}
    assert "nope" in stats.first_error


def test_the_token_travels_as_bearer_authorization_metadata(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    servicer = RecordingServicer(token="s3cret")
    serve(servicer, target)
    client = make_client(target, token="s3cret")

    for i in range(10):
        client.submit(batch(i))
    client.close()

    assert servicer.received() == list(range(10))
    assert set(servicer.authorization) == {"Bearer s3cret"}
    assert client.stats().accepted == 10


def test_a_wrong_token_logs_one_error_and_the_client_keeps_retrying(tmp_path, serve, make_client, caplog):
    caplog.set_level(logging.WARNING, logger="monitor.vllm.client")
    target = unix_target(tmp_path)
    servicer = RecordingServicer(token="s3cret")
    serve(servicer, target)
    client = make_client(target, token="wrong", queue_size=100, **FAST)

    for i in range(200):
        client.submit(batch(i))
    wait_until(lambda: client.stats().stream_errors >= 3)
    client.submit(batch(200))

    stats = client.stats()
    assert stats.accepted == 0 and not stats.connected
    assert servicer.received() == []
    errors = [r for r in caplog.records if r.name == "monitor.vllm.client" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "token" in errors[0].getMessage()


def test_mtls_with_a_client_certificate_and_server_name_override(tmp_path, serve, make_client):
    pki = make_pki(tmp_path / "pki")
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    servicer = RecordingServicer()
    port = serve(servicer, "127.0.0.1:0", credentials).port
    client = make_client(
        f"127.0.0.1:{port}",
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
        server_name="localhost",
    )

    for i in range(10):
        client.submit(batch(i))
    client.close()

    assert servicer.received() == list(range(10))


def test_close_flushes_queued_batches_and_is_idempotent(tmp_path, serve, make_client):
    target = unix_target(tmp_path)
    servicer = RecordingServicer()
    serve(servicer, target)
    client = make_client(target, queue_size=5000)

    for i in range(3000):
        client.submit(batch(i))
    client.close()
    after_first_close = client.stats()
    client.close()

    assert servicer.received() == list(range(3000))
    assert after_first_close.accepted == 3000 and after_first_close.queue_depth == 0
    assert client.stats() == after_first_close


def test_the_context_manager_starts_and_closes_the_client(tmp_path, serve):
    target = unix_target(tmp_path)
    servicer = RecordingServicer()
    serve(servicer, target)

    with SidecarClient(target) as client:
        client.submit(batch(0))

    assert servicer.received() == [0]
    assert client.stats().accepted == 1


def test_submit_before_start_or_after_close_is_dropped_and_reported(tmp_path, serve):
    target = unix_target(tmp_path)
    servicer = RecordingServicer()
    serve(servicer, target)
    client = SidecarClient(target)

    assert client.submit(batch(0)) is False
    client.start()
    assert client.submit(batch(1)) is True
    client.close()
    assert client.submit(batch(2)) is False

    stats = client.stats()
    assert (stats.submitted, stats.dropped, stats.accepted) == (3, 2, 1)
    assert servicer.client_dropped == 1, "the drop before start rides on the first message"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queue_size": 0},
        {"stream_max_seconds": 30.0, "rpc_timeout_seconds": 30.0},
        {"backoff_initial_seconds": 2.0, "backoff_max_seconds": 1.0},
        {"token": " padded "},
        {"private_key": b"key"},
        {"server_name": "sidecar.local"},
    ],
)
def test_inconsistent_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match="SidecarClient"):
        SidecarClient("127.0.0.1:1", **kwargs)
