"""`saemon serve` as a real process, driven over real gRPC channels (Unix socket, TCP + TLS)."""

from __future__ import annotations

import math
import signal
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polling import wait_for
from synthetic import batch, end, summary, write_pack
from tls import make_pki

from monitor.harness.sidecar import SidecarProcess, SidecarProcessError
from monitor.harness.watcher import DecisionWatcher
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc

MODEL = "SmolLM2-135M-Instruct"
PROMPT_TOKENS = 16
RESPONSE_STEPS = 40
SPIKE_STEP = 20


@pytest.fixture
def sidecar(tmp_path, packs):
    process = SidecarProcess(
        tmp_path,
        {"grpc_listen": f"unix://{tmp_path}/saemon.sock", "probes_dir": str(packs), "request_idle_seconds": 600},
    )
    with process:
        yield process
        assert process.stop() == 0, process.log()


def channel(process: SidecarProcess) -> grpc.Channel:
    return grpc.insecure_channel(process.settings["sidecar"]["grpc_listen"])


def stub(process: SidecarProcess) -> monitor_pb2_grpc.MonitorServiceStub:
    return monitor_pb2_grpc.MonitorServiceStub(channel(process))


# -- a workload whose outcome is known by construction ----------------------------------


def request_values(k: int, step: int) -> list[float]:
    """f0 is 0.3, spiking to 0.9 at SPIKE_STEP for every 5th request; f1 is 0.7 for every 7th."""
    f0 = 0.9 if (k % 5 == 0 and step == SPIKE_STEP) else 0.3
    f1 = 0.7 if k % 7 == 0 else 0.0
    return [f0, f1]


def stream_requests(stream: int, requests: int, concurrent: int = 8):
    """One worker's steps: `concurrent` requests in flight, each 1 prefill + 40 decode steps."""
    ids = [f"s{stream}-r{i}" for i in range(requests)]
    numbers = [stream * 1000 + i for i in range(requests)]
    progress: dict[int, int] = {}
    waiting = list(range(requests))
    step = 0
    while waiting or progress:
        while waiting and len(progress) < concurrent:
            progress[waiting.pop(0)] = -1
        summaries, ends = [], []
        for i, done in list(progress.items()):
            if done == -1:
                summaries.append(summary(ids[i], [0.1, 0.0], 0, n=PROMPT_TOKENS, scope=pb.TOKEN_SCOPE_PROMPT))
            else:
                summaries.append(summary(ids[i], request_values(numbers[i], done), PROMPT_TOKENS + done))
            progress[i] = done + 1
            if progress[i] == RESPONSE_STEPS:
                ends.append(end(ids[i]))
                del progress[i]
        yield pb.IngestRequest(batches=[batch(summaries, ends, step=step)])
        step += 1


def expected_flags(streams: int, requests: int) -> tuple[set[str], set[str]]:
    ids = [(f"s{s}-r{i}", s * 1000 + i) for s in range(streams) for i in range(requests)]
    return {r for r, k in ids if k % 5 == 0}, {r for r, k in ids if k % 7 == 0}


def test_concurrent_streams_produce_exact_reports_metrics_and_alerts(sidecar):
    streams, requests = 4, 100
    spiking, steady = expected_flags(streams, requests)
    expected_decisions = 2 * (len(spiking) + len(steady))  # each fires once and resolves at end
    watcher = DecisionWatcher(channel(sidecar), kinds=(pb.DECISION_KIND_FIRED, pb.DECISION_KIND_RESOLVED)).start()
    # the subscription must exist before the decisions are made
    wait_for(
        lambda: (
            sidecar.metric(
                "grpc_server_started_total",
                grpc_type="server_stream",
                grpc_service="saemon.v1.MonitorService",
                grpc_method="WatchAlerts",
            )
            == 1
        )
    )

    with ThreadPoolExecutor(streams) as pool:
        responses = list(pool.map(lambda s: stub(sidecar).Ingest(stream_requests(s, requests)), range(streams)))
    steps = [len(list(stream_requests(s, requests))) for s in range(streams)]
    assert sum(steps) > 2000
    for response, sent in zip(responses, steps, strict=True):
        assert (response.batches_accepted, response.batches_rejected) == (sent, 0)
    wait_for(lambda: len(watcher.decisions) >= expected_decisions, timeout=20)
    watcher.stop()
    assert watcher.error is None
    received = watcher.decisions
    assert len(received) == expected_decisions

    fired = {(d.request_id, d.probe) for d in received if d.kind == pb.DECISION_KIND_FIRED}
    assert fired == {(r, "safety_max") for r in spiking} | {(r, "safety_mean") for r in steady}
    resolved = {(d.request_id, d.probe) for d in received if d.kind == pb.DECISION_KIND_RESOLVED}
    assert resolved == fired

    sidecar.wait_idle()
    total = streams * requests
    assert sidecar.metric("saemon_tokens_scored_total", model_name=MODEL, scope="response") == total * RESPONSE_STEPS
    assert sidecar.metric("saemon_tokens_scored_total", model_name=MODEL, scope="prompt") == total * PROMPT_TOKENS
    assert sidecar.metric("saemon_requests_scored_total", model_name=MODEL) == total
    assert sidecar.metric(
        "saemon_requests_flagged_total", model_name=MODEL, probe="safety_max", severity="critical"
    ) == len(spiking)
    assert sidecar.metric(
        "saemon_requests_flagged_total", model_name=MODEL, probe="safety_mean", severity="warning"
    ) == len(steady)
    assert sidecar.metric("saemon_probe_score_count", model_name=MODEL, probe="safety_max") == total
    # float32 0.3 on the wire is 0.30000001: the quiet requests land in the 0.4 bucket
    assert sidecar.metric("saemon_probe_score_bucket", model_name=MODEL, probe="safety_max", le="0.4") == total - len(
        spiking
    )
    assert sidecar.metric("saemon_probe_score_bucket", model_name=MODEL, probe="safety_max", le="0.8") == total - len(
        spiking
    )
    assert sidecar.metric("saemon_ingest_batches_total") == sum(steps)
    assert sidecar.metric("saemon_requests_active") == 0
    assert sidecar.metric("saemon_ingest_latency_seconds_count") is not None
    assert (
        sidecar.metric(
            "grpc_server_handled_total",
            grpc_type="client_stream",
            grpc_service="saemon.v1.MonitorService",
            grpc_method="Ingest",
            grpc_code="OK",
        )
        == streams
    )

    # request 35 of stream 0 both spiked (k % 5) and is steady (k % 7)
    report = stub(sidecar).GetRequestReport(pb.GetRequestReportRequest(request_id="s0-r35")).report
    assert report.finished and report.finish_reason == pb.FINISH_REASON_STOP
    assert (report.prompt_tokens, report.response_tokens) == (PROMPT_TOKENS, RESPONSE_STEPS)
    scores = {s.probe: s for s in report.scores}
    assert scores["safety_max"].score == pytest.approx(0.9)
    assert scores["safety_max"].peak_position == PROMPT_TOKENS + SPIKE_STEP
    assert scores["safety_max"].fired and not scores["safety_max"].firing
    assert scores["safety_mean"].score == pytest.approx(0.7)
    firing = [d for d in report.decisions if d.kind == pb.DECISION_KIND_FIRED]
    assert {d.probe for d in firing} == {"safety_max", "safety_mean"}
    mean_fire = next(d for d in firing if d.probe == "safety_mean")
    assert mean_fire.tokens == 4  # min_tokens
    assert [f.feature for f in mean_fire.features] == ["f0", "f1"]


def test_bad_batches_and_bad_rows_are_counted_and_the_stream_goes_on(tmp_path, packs):
    sidecar = SidecarProcess(
        tmp_path,
        {
            "grpc_listen": f"unix://{tmp_path}/small.sock",
            "probes_dir": str(packs),
            "max_message_bytes": 65536,
        },
    ).start()
    good = batch([summary("good", [0.1, 0.1], 0)])
    huge = pb.IngestRequest(batches=[batch([summary(f"h{i}", [0.1, 0.1], 0) for i in range(2_000)])])
    assert huge.ByteSize() > 65536
    messages = [
        pb.IngestRequest(batches=[good]),
        # a NaN row beside a good one: the good one is scored
        pb.IngestRequest(batches=[batch([summary("x", [math.nan, 0.0], 0), summary("fine", [0.3, 0.0], 0)])]),
        pb.IngestRequest(batches=[batch([summary("x", [0.1], 0)]), batch([summary("x", [0.1, 0.1], 0)], pack="other")]),
        huge,
        pb.IngestRequest(batches=[batch([summary("good", [0.2, 0.1], 1)])], client_dropped=7),
        pb.IngestRequest(batches=[batch([summary("neg", [0.2, 0.1], -1)])], client_dropped=2**64 - 1),
    ]
    response = stub(sidecar).Ingest(iter(messages))
    assert response.batches_accepted == 5
    assert dict(response.rejected_by_reason) == {"unknown_pack": 1, "oversized": 1}
    assert dict(response.summaries_rejected_by_reason) == {"non_finite": 1, "malformed": 1, "out_of_range": 1}
    assert response.summaries_rejected == 3
    assert "NaN" in response.first_error
    client = stub(sidecar)
    assert client.GetRequestReport(pb.GetRequestReportRequest(request_id="good")).report.response_tokens == 2
    assert client.GetRequestReport(pb.GetRequestReportRequest(request_id="fine")).report.response_tokens == 1
    for rid in ("x", "neg"):
        with pytest.raises(grpc.RpcError) as err:
            client.GetRequestReport(pb.GetRequestReportRequest(request_id=rid))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for reason, count in {"unknown_pack": 1, "oversized": 1, "client_queue_full": 7}.items():
        assert sidecar.metric("saemon_events_dropped_total", reason=reason) == count
    for reason in ("non_finite", "malformed", "out_of_range"):
        assert sidecar.metric("saemon_summaries_rejected_total", reason=reason) == 1
    assert sidecar.stop() == 0


def test_queries_answer_with_canonical_status_codes(sidecar):
    client = stub(sidecar)
    with pytest.raises(grpc.RpcError) as err:
        client.GetRequestReport(pb.GetRequestReportRequest(request_id="never-seen"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.GetRequestReport(pb.GetRequestReportRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    probes = {p.name: p for p in client.ListProbes(pb.ListProbesRequest()).probes}
    assert sorted(probes) == ["safety_max", "safety_mean"]
    mean = probes["safety_mean"]
    assert (mean.pack, mean.aggregation, mean.min_tokens, list(mean.layers)) == ("safety", "mean", 4, [14])
    assert mean.scope == pb.TOKEN_SCOPE_RESPONSE and probes["safety_max"].severity == pb.SEVERITY_CRITICAL
    health = health_pb2_grpc.HealthStub(channel(sidecar))
    for service in ("", "saemon.v1.MonitorService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_reload_keeps_old_packs_on_error_and_sighup_reloads(sidecar, packs):
    client = stub(sidecar)
    (packs / "broken.yaml").write_text("pack: broken\n")
    with pytest.raises(grpc.RpcError) as err:
        client.ReloadProbes(pb.ReloadProbesRequest())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "broken.yaml" in err.value.details() and "old packs kept" in err.value.details()
    assert len(client.ListProbes(pb.ListProbesRequest()).probes) == 2
    assert sidecar.metric("saemon_config_last_reload_successful") == 0

    (packs / "broken.yaml").unlink()
    write_pack(packs, name="extra")
    response = client.ReloadProbes(pb.ReloadProbesRequest())
    assert sorted(response.packs) == ["extra", "safety"] and response.probes == 4
    assert sidecar.metric("saemon_config_last_reload_successful") == 1

    write_pack(packs, name="third")
    sidecar.signal(signal.SIGHUP)
    wait_for(lambda: len(client.ListProbes(pb.ListProbesRequest()).probes) == 6)
    assert sidecar.metric("saemon_probes_loaded") == 6


def test_a_reload_never_empties_the_probe_set_and_survives_any_bad_file(sidecar, packs):
    client = stub(sidecar)
    pack = packs / "safety.yaml"
    original = pack.read_bytes()

    def refused(fragment: str) -> None:
        with pytest.raises(grpc.RpcError) as err:
            client.ReloadProbes(pb.ReloadProbesRequest())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert fragment in err.value.details()
        assert len(client.ListProbes(pb.ListProbesRequest()).probes) == 2  # the old packs serve
        assert sidecar.metric("saemon_config_last_reload_successful") == 0

    pack.write_bytes(b"pack: caf\xe9\n")  # Latin-1, not UTF-8
    refused("not UTF-8")
    sidecar.signal(signal.SIGHUP)  # the handler survives it too
    wait_for(lambda: "SIGHUP reload failed" in sidecar.log())
    pack.unlink()
    pack.mkdir()
    refused("safety.yaml: a directory")
    pack.rmdir()
    refused("now holds no pack")

    pack.write_bytes(original)
    assert client.ReloadProbes(pb.ReloadProbesRequest()).probes == 2
    assert sidecar.metric("saemon_config_last_reload_successful") == 1
    client.Ingest(iter([pb.IngestRequest(batches=[batch([summary("after", [0.1, 0.1], 0)])])]))
    assert client.GetRequestReport(pb.GetRequestReportRequest(request_id="after")).report.response_tokens == 1


def test_unix_socket_is_private_to_the_pod_group(sidecar, tmp_path):
    mode = (tmp_path / "saemon.sock").stat().st_mode & 0o777
    assert mode == 0o660


def test_readiness_and_metrics_endpoints(sidecar):
    with urllib.request.urlopen(f"{sidecar.http}/healthz") as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{sidecar.http}/readyz") as response:
        assert response.status == 200
    metrics = sidecar.metrics()
    assert metrics[("saemon_build_info", frozenset({("version", _version())}))] == 1
    assert sidecar.metric("saemon_ingest_queue_capacity") == 4096
    assert sidecar.metric("saemon_events_dropped_total", reason="malformed") == 0  # pre-initialised
    # The standard process and Python series, and the collector's pauses (the start-up's full
    # collection before gc.freeze() is the first generation-2 one).
    assert sidecar.metric("process_resident_memory_bytes") > 0
    assert any(name == "python_info" for name, _ in metrics)
    assert sidecar.metric("saemon_gc_pause_seconds_count", generation="2") >= 1
    assert sidecar.metric("saemon_gc_pause_seconds_sum", generation="2") > 0


def test_tls_and_bearer_token_on_tcp(tmp_path, packs):
    pki = make_pki(tmp_path / "pki")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    from monitor.harness import free_port

    port = free_port()
    process = SidecarProcess(
        tmp_path,
        {
            "grpc_listen": f"127.0.0.1:{port}",
            "probes_dir": str(packs),
            "auth_token_file": str(token_file),
            "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)},
        },
    )
    with process:
        credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
        secure = grpc.secure_channel(f"localhost:{port}", credentials)
        client = monitor_pb2_grpc.MonitorServiceStub(secure)
        steps = [pb.IngestRequest(batches=[batch([summary("t", [0.9, 0.0], 0)])])]

        for metadata in ([], [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as err:
                client.Ingest(iter(steps), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                client.ListProbes(pb.ListProbesRequest(), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert process.metric("saemon_tokens_scored_total", model_name=MODEL, scope="response") is None
        assert process.metric("saemon_events_dropped_total", reason="unauthenticated") == 4

        # health is exempt; the right token works
        health = health_pb2_grpc.HealthStub(secure)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        good = [("authorization", "Bearer s3cret-token")]
        assert client.Ingest(iter(steps), metadata=good).batches_accepted == 1
        process.wait_idle()
        assert process.metric("saemon_tokens_scored_total", model_name=MODEL, scope="response") == 1

        # plaintext to a TLS port fails
        with pytest.raises(grpc.RpcError):
            monitor_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}")).ListProbes(
                pb.ListProbesRequest(), metadata=good, timeout=5
            )
        assert process.stop() == 0


def test_invalid_config_fails_at_start_naming_the_field(tmp_path, packs):
    process = SidecarProcess(tmp_path, {"grpc_listen": "127.0.0.1:0", "probes_dir": str(packs)})
    with pytest.raises(SidecarProcessError) as err:
        process.start()
    assert "TCP without TLS" in str(err.value) and "sidecar.tls.cert_file" in str(err.value)

    process = SidecarProcess(tmp_path, {"probes_dir": str(tmp_path / "absent")}, name="absent")
    with pytest.raises(SidecarProcessError, match="SAEMON_SIDECAR__PROBES_DIR"):
        process.start()

    bad = SidecarProcess(tmp_path, {"ingest_queue_size": 0}, name="bad")
    with pytest.raises(SidecarProcessError, match=r"sidecar.ingest_queue_size"):
        bad.start()


def _version() -> str:
    from monitor import __version__

    return __version__


def test_client_reconnects_when_the_sidecar_restarts_mid_stream(tmp_path, packs):
    from monitor.vllm.client import SidecarClient

    socket = f"unix://{tmp_path}/restart.sock"
    first = SidecarProcess(tmp_path, {"grpc_listen": socket, "probes_dir": str(packs)}, name="first").start()
    client = SidecarClient(socket, queue_size=256, stream_max_seconds=0.2, backoff_max_seconds=0.5)
    client.start()
    sent = 0

    def submit(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            client.submit(batch([summary(f"q{sent}", [0.1, 0.0], 0)], step=sent))
            sent += 1

    submit(300)
    wait_for(lambda: client.stats().accepted + client.stats().dropped == 300)
    accepted_by_first = client.stats().accepted
    first.wait_idle()
    assert first.metric("saemon_tokens_scored_total", model_name=MODEL, scope="response") == accepted_by_first
    drops_told_first = first.metric("saemon_events_dropped_total", reason="client_queue_full")
    first.kill()  # no graceful stop: the stream breaks under the client

    before = client.stats()
    submit(1_000)  # while nobody listens: the queue fills, the rest is dropped, nothing blocks
    stats = client.stats()
    # each of the 1000 is dropped, still queued, or was pulled into the stream that is dying
    pulled = stats.sent - before.sent
    assert stats.dropped - before.dropped >= 1_000 - 256 - pulled and stats.queue_depth <= 256

    second = SidecarProcess(tmp_path, {"grpc_listen": socket, "probes_dir": str(packs)}, name="second").start()
    wait_for(lambda: client.stats().reconnects >= 1 and client.stats().queue_depth == 0, timeout=20)
    submit(200)
    client.close()
    stats = client.stats()
    assert stats.submitted == sent == 1_500
    assert stats.stream_errors >= 1
    # every batch is accounted for: accepted by a server, dropped, or lost in a broken stream
    assert stats.accepted + stats.dropped + stats.unconfirmed >= sent
    assert stats.accepted >= accepted_by_first + 200
    second.wait_idle()
    scored = second.metric("saemon_tokens_scored_total", model_name=MODEL, scope="response")
    assert scored == stats.accepted - accepted_by_first  # the second sidecar scored what it accepted
    # the drops the client counted reached the sidecars' metrics: none lost (a count that rode
    # on a message of the broken stream is sent again, so it may be counted twice)
    drops_told_second = second.metric("saemon_events_dropped_total", reason="client_queue_full")
    assert drops_told_first + drops_told_second >= stats.dropped
    assert drops_told_second <= stats.dropped
    assert second.stop() == 0


def test_bytes_that_are_not_a_message_answer_invalid_argument_and_keep_what_came_before(sidecar):
    raw = channel(sidecar)
    ingest = raw.stream_unary(
        "/saemon.v1.MonitorService/Ingest",
        request_serializer=lambda b: b,
        response_deserializer=pb.IngestResponse.FromString,
    )
    good = pb.IngestRequest(batches=[batch([summary("before", [0.1, 0.1], 0)])]).SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        ingest(iter([good, b"\xff\xff\xff\xff"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "the request (4 bytes) is not a valid saemon.v1.IngestRequest message"
    report = raw.unary_unary(
        "/saemon.v1.MonitorService/GetRequestReport",
        request_serializer=lambda b: b,
        response_deserializer=pb.GetRequestReportResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as err:
        report(b"\x0a\xff")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "GetRequestReportRequest" in err.value.details()
    # the message before the garbage was scored, and the server serves on
    wait_for(lambda: stub(sidecar).GetRequestReport(pb.GetRequestReportRequest(request_id="before")).report)
    assert stub(sidecar).ListProbes(pb.ListProbesRequest()).probes


def test_an_unexpected_error_answers_internal_without_its_text():
    """The guards around every method, on a real aio server with a servicer that fails."""
    import asyncio

    from monitor.sidecar.service import register

    class Failing:
        def __getattr__(self, name):
            async def fail(request, context):
                raise RuntimeError("secret path /etc/saemon/token")

            return fail

    async def scenario():
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        register(Failing(), server)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await monitor_pb2_grpc.MonitorServiceStub(ch).ListProbes(pb.ListProbesRequest())
                return err.value
        finally:
            await server.stop(0)

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details() and "logged" in error.details()


def test_ten_thousand_made_up_model_names_create_no_series(sidecar):
    """Before: every distinct model_name made ~112 series (10k names: a 100 MB /metrics)."""
    http = sidecar.http

    def exposition() -> str:
        with urllib.request.urlopen(f"{http}/metrics", timeout=10) as response:
            return response.read().decode()

    before = len(exposition())
    names = [f"tenant-{i}" for i in range(10_000)] + ["x" * 1_000_000]
    messages = [
        pb.IngestRequest(batches=[batch([summary(f"r{k}", [0.1, 0.1], 0)], model=name) for name in names[i : i + 500]])
        for i, k in zip(range(0, len(names), 500), range(10_000), strict=False)
    ]
    response = stub(sidecar).Ingest(iter(messages))
    assert response.batches_accepted == 0
    assert dict(response.rejected_by_reason) == {"unknown_model": 10_000, "malformed": 1}
    assert "sidecar.model_names" in response.first_error
    text = exposition()
    assert "tenant-" not in text and len(text) < before * 1.05
    assert sidecar.metric("saemon_events_dropped_total", reason="unknown_model") == 10_000


def test_a_scrape_does_not_hold_the_event_loop():
    """A collector that waits for the event loop to release it: if /metrics were rendered
    on the loop, the loop could not run and the collector would give up after 10 s."""
    import asyncio
    import threading

    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

    from monitor.config import RedisSettings, Settings
    from monitor.sidecar.endpoints import HttpEndpoints
    from monitor.sidecar.metrics import SidecarMetrics
    from monitor.sidecar.store import AuditStore

    class Waiting:
        def __init__(self) -> None:
            self.started, self.release, self.released = threading.Event(), threading.Event(), None

        def collect(self):
            self.started.set()
            self.released = self.release.wait(10)
            yield GaugeMetricFamily("slow_collector", "waits for the event loop", value=1)

    async def scenario(collector: Waiting) -> str:
        metrics = SidecarMetrics(CollectorRegistry())
        settings = Settings.model_validate({"sidecar": {"http_listen": "127.0.0.1:0"}})
        endpoints = HttpEndpoints(settings, metrics, AuditStore(RedisSettings(), metrics), lambda: True)
        await endpoints.start()
        metrics.registry.register(collector)
        try:
            url = f"http://{endpoints.address}/metrics"
            scrape = asyncio.create_task(asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=20).read()))
            while not collector.started.is_set():
                await asyncio.sleep(0.01)
            collector.release.set()  # the loop runs while the scrape is being rendered
            return (await scrape).decode()
        finally:
            await endpoints.stop()

    collector = Waiting()
    text = asyncio.run(scenario(collector))
    assert collector.released is True and "slow_collector 1.0" in text
