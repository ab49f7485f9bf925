"""Sidecar ingest: sustained throughput on one core and ingest-to-decision latency.

Starts a real `saemon serve` (one process: the scorer uses one core) on a Unix socket with
a pack of F features and P probes, then from this process (the other core):

1. saturation: streams pre-built step batches as fast as gRPC takes them for a fixed
   number of batches and reports feature summaries scored per second (wall time from the
   first send until the sidecar's queue is empty);
2. latency: offers a fixed fraction of that rate, with a probe firing in every 10th batch,
   and reports p50 / p99 of decided - produced from the decisions' own timestamps
   (WatchAlerts), i.e. gRPC + queue + scoring.

    python bench/ingest.py [--features 16] [--requests-per-step 32] [--seconds 10] [--form columns|rows]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from synthetic import write_pack

from monitor.harness.sidecar import SidecarProcess
from monitor.harness.watcher import DecisionWatcher
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc


def make_pack(directory: Path, features: int) -> None:
    write_pack(
        directory,
        name="bench",
        features=[{"name": f"f{i}", "layer": 14, "threshold": 0.5} for i in range(features)],
        probes=[
            {"name": "spike", "concept": "c", "features": ["f0"], "aggregation": "max", "threshold": 0.8},
            {
                "name": "mean",
                "concept": "c",
                "features": [f"f{i}" for i in range(min(4, features))],
                "aggregation": "mean",
                "threshold": 0.9,
                "min_tokens": 4,
            },
            {
                "name": "ema",
                "concept": "c",
                "features": ["f1" if features > 1 else "f0"],
                "aggregation": "ema",
                "threshold": 0.9,
            },
            {
                "name": "window",
                "concept": "c",
                "features": ["f0"],
                "aggregation": "window_count",
                "threshold": 8,
                "window_tokens": 16,
            },
        ],
    )


def step_batch(step: int, requests: int, features: int, fire: bool, produced: int) -> pb.StepBatch:
    """A decode step: `requests` requests with one token each; request 0 spikes when `fire`."""
    summaries = []
    for r in range(requests):
        request_id = f"s{step}-r{r}" if fire and r == 0 else f"r{r}-{step // 64}"
        value = 0.95 if fire and r == 0 else 0.2
        summaries.append(
            pb.RequestSummary(
                request_id=request_id,
                scope=pb.TOKEN_SCOPE_RESPONSE,
                first_position=step,
                num_tokens=1,
                max=[value] * features,
                argmax_position=[step] * features,
                sum=[value] * features,
                count_above=[0] * features,
            )
        )
    batch = pb.StepBatch(model_name="bench", pack="bench", pack_version="1", step=step, produced_unix_nanos=produced)
    if FORM == "rows":
        batch.requests.extend(summaries)
        return batch
    columns = batch.columns  # the same summaries as the plugin sends them
    columns.request_id.extend(s.request_id for s in summaries)
    columns.scope.extend(s.scope for s in summaries)
    columns.first_position.extend(s.first_position for s in summaries)
    columns.num_tokens.extend(s.num_tokens for s in summaries)
    for name, dtype in (("max", "<f4"), ("argmax_position", "<i8"), ("sum", "<f4"), ("count_above", "<u4")):
        setattr(columns, name, np.array([getattr(s, name) for s in summaries], dtype=dtype).tobytes())
    return batch


#: The wire form of the step batches (--form).
FORM = "columns"


def saturation(stub, batches: int, requests: int, features: int, sidecar: SidecarProcess) -> float:
    prebuilt = [pb.IngestRequest(batches=[step_batch(i, requests, features, False, 0)]) for i in range(batches)]
    started = time.perf_counter()
    response = stub.Ingest(iter(prebuilt))
    sidecar.wait_idle(timeout=600)
    elapsed = time.perf_counter() - started
    assert response.batches_accepted == batches, response
    return batches * requests * features / elapsed


def latency(channel, stub, rate_batches: float, seconds: float, requests: int, features: int) -> list[float]:
    watcher = DecisionWatcher(channel, pb.WatchAlertsRequest(probes=["spike"])).start()
    time.sleep(0.5)

    def paced():
        interval = 1.0 / rate_batches
        start = time.perf_counter()
        step = 0
        while time.perf_counter() - start < seconds:
            target = start + step * interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield pb.IngestRequest(batches=[step_batch(step, requests, features, step % 10 == 0, time.time_ns())])
            step += 1

    stub.Ingest(paced())
    time.sleep(1.0)
    watcher.stop()
    return [(d.decided_unix_nanos - d.produced_unix_nanos) / 1e6 for d in watcher.decisions]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16, help="features per pack")
    parser.add_argument("--requests-per-step", type=int, default=32, help="requests in each step batch")
    parser.add_argument("--batches", type=int, default=4000, help="batches in the saturation run")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each latency run")
    parser.add_argument(
        "--form",
        choices=["columns", "rows"],
        default="columns",
        help="columns: SummaryColumns, as the plugin sends; rows: one RequestSummary per request",
    )
    args = parser.parse_args()
    global FORM
    FORM = args.form

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "packs").mkdir()
        make_pack(directory / "packs", args.features)
        sidecar = SidecarProcess(
            directory,
            {"grpc_listen": f"unix://{directory}/bench.sock", "probes_dir": str(directory / "packs")},
        )
        with sidecar:
            channel = grpc.insecure_channel(f"unix://{directory}/bench.sock")
            stub = monitor_pb2_grpc.MonitorServiceStub(channel)
            per_batch = args.requests_per_step * args.features
            rate = saturation(stub, args.batches, args.requests_per_step, args.features, sidecar)
            print(
                f"shape: {args.requests_per_step} requests/step x {args.features} features = "
                f"{per_batch} feature summaries per step batch, 4 probes, {args.form} on the wire"
            )
            print(
                f"saturation: {rate:,.0f} feature summaries/s "
                f"= {rate / args.features:,.0f} request-tokens/s = {rate / per_batch:,.0f} steps/s"
            )
            print()
            print("offered load   steps/s   decisions   p50 ms   p99 ms   max ms")
            for fraction in (0.1, 0.5, 0.8):
                steps = fraction * rate / per_batch
                lat = latency(channel, stub, steps, args.seconds, args.requests_per_step, args.features)
                if not lat:
                    print(f"{fraction:>11.0%}   {steps:7.0f}   no decisions")
                    continue
                print(
                    f"{fraction:>11.0%}   {steps:7.0f}   {len(lat):9d}   {percentile(lat, 50):6.2f}   "
                    f"{percentile(lat, 99):6.2f}   {max(lat):6.2f}"
                )
            sidecar.stop()


if __name__ == "__main__":
    main()
