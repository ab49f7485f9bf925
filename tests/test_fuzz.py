"""Fuzzing a real `saemon serve` over its real gRPC socket: random bytes and mutated step
batches, each sent beside a good batch that must still be scored. Seeded (derandomized)
and bounded, so it runs the same in every `make test` within seconds.

What must hold for every input: the server answers (an IngestResponse, or
INVALID_ARGUMENT for bytes that are not a message, never UNKNOWN or INTERNAL), the good
batch beside it is scored exactly, and no input creates a metric series of its own.
"""

from __future__ import annotations

import itertools
import math
import urllib.request

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import batch, summary

from monitor.harness.sidecar import SidecarProcess
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc

MODEL = "SmolLM2-135M-Instruct"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_canaries = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from synthetic import write_pack

    root = tmp_path_factory.mktemp("fuzz")
    packs = root / "packs"
    packs.mkdir()
    write_pack(packs)
    process = SidecarProcess(
        root,
        {"grpc_listen": f"unix://{root}/fuzz.sock", "probes_dir": str(packs), "request_idle_seconds": 600},
    )
    with process:
        channel = grpc.insecure_channel(f"unix://{root}/fuzz.sock")
        yield process, channel
        channel.close()
        assert process.stop() == 0, process.log()


def canary() -> tuple[str, pb.StepBatch]:
    rid = f"canary-{next(_canaries)}"
    return rid, batch([summary(rid, [0.3, 0.1], 0, n=2)])


def check_canary(channel: grpc.Channel, rid: str) -> None:
    report = (
        monitor_pb2_grpc.MonitorServiceStub(channel)
        .GetRequestReport(pb.GetRequestReportRequest(request_id=rid), timeout=10)
        .report
    )
    assert report.response_tokens == 2


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.one_of(st.text(max_size=40), st.text(min_size=300, max_size=2000), st.just(""))


@st.composite
def mutated_summaries(draw) -> pb.RequestSummary:
    features = draw(st.integers(min_value=0, max_value=4))
    return pb.RequestSummary(
        request_id=draw(texts),
        scope=draw(st.integers(min_value=0, max_value=5)),
        first_position=draw(ints),
        num_tokens=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        max=draw(st.lists(floats, min_size=features, max_size=features)),
        argmax_position=draw(st.lists(ints, min_size=features, max_size=features)),
        sum=draw(st.lists(floats, min_size=features, max_size=features)),
        count_above=draw(st.lists(st.integers(0, 2**32 - 1), min_size=features, max_size=features)),
    )


@st.composite
def mutated_batches(draw) -> pb.StepBatch:
    step = pb.StepBatch(
        model_name=draw(st.one_of(st.just(MODEL), texts)),
        pack=draw(st.sampled_from(["safety", "other", ""])),
        pack_version=draw(st.sampled_from(["1", "2", ""])),
        step=draw(st.integers(0, 2**63 - 1)),
        produced_unix_nanos=draw(st.integers(0, 2**63 - 1)),
        requests=draw(st.lists(mutated_summaries(), max_size=4)),
    )
    for _ in range(draw(st.integers(0, 2))):
        step.ends.append(
            pb.RequestEnd(
                request_id=draw(texts),
                prompt_tokens=draw(st.integers(0, 2**32 - 1)),
                response_tokens=draw(st.integers(0, 2**32 - 1)),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        step.unscored.append(
            pb.UnscoredTokens(
                request_id=draw(texts), reason=draw(st.integers(0, 4)), count=draw(st.integers(0, 2**32 - 1))
            )
        )
    return step


@FUZZ
@given(step=mutated_batches(), dropped=st.integers(0, 2**64 - 1))
def test_mutated_batches_never_break_the_server_or_the_good_batch_beside_them(server, step, dropped):
    _, channel = server
    rid, good = canary()
    response = monitor_pb2_grpc.MonitorServiceStub(channel).Ingest(
        iter([pb.IngestRequest(batches=[step, good], client_dropped=dropped)]), timeout=10
    )
    assert response.batches_accepted + response.batches_rejected == 2
    check_canary(channel, rid)


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_answer_invalid_argument_or_parse_and_the_server_serves_on(server, data):
    _, channel = server
    ingest = channel.stream_unary(
        "/saemon.v1.MonitorService/Ingest",
        request_serializer=lambda b: b,
        response_deserializer=pb.IngestResponse.FromString,
    )
    rid, good = canary()
    try:
        ingest(iter([pb.IngestRequest(batches=[good]).SerializeToString(), data]))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
        assert "not a valid saemon.v1.IngestRequest" in exc.details()
    check_canary(channel, rid)  # sent before the garbage: kept


def test_after_the_fuzz_the_server_is_healthy_and_its_metrics_are_bounded(server):
    process, _ = server
    status, body = process.readiness()
    assert status == 200, body
    with urllib.request.urlopen(f"{process.http}/metrics", timeout=10) as page:
        text = page.read().decode()
    models = {line.split('model_name="', 1)[1].split('"', 1)[0] for line in text.splitlines() if 'model_name="' in line}
    assert models <= {MODEL}, sorted(models)[:5]
    assert len(text) < 200_000
    # every canary's two response tokens were counted, whatever was sent beside them
    scored = process.metric("saemon_tokens_scored_total", model_name=MODEL, scope="response")
    assert not math.isnan(scored or 0) and scored >= 2 * next(_canaries)
