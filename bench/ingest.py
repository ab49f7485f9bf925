"""Sidecar ingest: sustained throughput on one core and ingest-to-decision latency.

Starts a real `saemon serve` (one process: the scorer uses one core) on a Unix socket with
a pack of F features and P probes, then from this process (the other core):

1. saturation: streams pre-built step batches as fast as gRPC takes them for a fixed
   number of batches and reports feature summaries scored per second (wall time from the
   first send until the sidecar's queue is empty);
2. latency: offers a fixed fraction of that rate, with a probe firing in every 10th batch,
   and reports p50 / p99 of decided - produced from the decisions' own timestamps
   (WatchAlerts), i.e. gRPC + queue + scoring;
3. steady state: ends --held requests (each a prompt step, a response step and an end
   marker), so the sidecar holds its cap of finished reports as a long-running one does,
   then reports its RSS and the latency at half the saturation rate again;
4. with --active N: also holds N live requests (two steps each, no end marker), then
   offers half the saturation rate for --steady-seconds and reports the latency, the RSS
   and the garbage collections in that window (from saemon_gc_pause_seconds): a full
   collection walks every live request, so this is where its pause would show.

    python bench/ingest.py [--features 16] [--requests-per-step 32] [--seconds 10] [--form columns|rows]
                           [--held 20000] [--active 100000 --steady-seconds 40]
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
        # each latency run has fresh ids: a request that fired in an earlier run would not fire again
        request_id = f"run{RUN}-s{step}-r{r}" if fire and r == 0 else f"run{RUN}-r{r}-{step // 64}"
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
    batch = pb.StepBatch(model_name=MODEL, pack="bench", pack_version="1", step=step, produced_unix_nanos=produced)
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
MODEL = "bench"
RUN = 0


def hold(stub, count: int, features: int, sidecar: SidecarProcess, finish: bool = True) -> None:
    """``count`` requests that run two steps, and end when ``finish``: finished reports, or
    live requests, that the sidecar keeps."""
    prefix = "held" if finish else "live"
    for start in range(0, count, 500):
        ids = [f"{prefix}-{i}" for i in range(start, min(count, start + 500))]
        steps = []
        for step, scope in enumerate((pb.TOKEN_SCOPE_PROMPT, pb.TOKEN_SCOPE_RESPONSE)):
            rows = [
                pb.RequestSummary(
                    request_id=rid,
                    scope=scope,
                    first_position=step * 8,
                    num_tokens=8 if step == 0 else 1,
                    max=[0.3] * features,
                    argmax_position=[step * 8] * features,
                    sum=[0.3] * features,
                    count_above=[0] * features,
                )
                for rid in ids
            ]
            batch = pb.StepBatch(model_name=MODEL, pack="bench", pack_version="1", step=step, requests=rows)
            if step == 1 and finish:
                batch.ends.extend(pb.RequestEnd(request_id=rid, response_tokens=1, prompt_tokens=8) for rid in ids)
            steps.append(pb.IngestRequest(batches=[batch]))
        stub.Ingest(iter(steps))
    sidecar.wait_idle(timeout=600)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def saturation(stub, batches: int, requests: int, features: int, sidecar: SidecarProcess) -> float:
    prebuilt = [pb.IngestRequest(batches=[step_batch(i, requests, features, False, 0)]) for i in range(batches)]
    started = time.perf_counter()
    response = stub.Ingest(iter(prebuilt))
    sidecar.wait_idle(timeout=600)
    elapsed = time.perf_counter() - started
    assert response.batches_accepted == batches, response
    return batches * requests * features / elapsed


def latency(channel, stub, rate_batches: float, seconds: float, requests: int, features: int) -> list[float]:
    global RUN
    RUN += 1
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


def collections_between(before: dict, after: dict) -> str:
    """The garbage collections between two scrapes of saemon_gc_pause_seconds: full ones
    (generation 2) with their time and the bucket of the longest, young ones with their time."""

    def delta(sample: str, generations: tuple[str, ...]) -> float:
        keys = [(f"saemon_gc_pause_seconds_{sample}", frozenset({("generation", g)})) for g in generations]
        return sum(after[k] - before[k] for k in keys)

    full, young = ("2",), ("0", "1")
    buckets = sorted(
        (float(dict(labels)["le"]), value - before[(name, labels)])
        for (name, labels), value in after.items()
        if name == "saemon_gc_pause_seconds_bucket" and dict(labels)["generation"] == "2"
    )
    count = buckets[-1][1]
    longest = "none"
    if count:
        upper = next(le for le, n in buckets if n == count)
        below = [le for le, n in buckets if n < count]
        longest = f"<= {upper * 1000:g} ms" + (f" (> {below[-1] * 1000:g} ms)" if below else "")
    return (
        f"{count:.0f} full ({delta('sum', full) * 1000:.0f} ms in all, longest {longest}), "
        f"{delta('count', young):.0f} young ({delta('sum', young) * 1000:.0f} ms in all)"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16, help="features per pack")
    parser.add_argument("--requests-per-step", type=int, default=32, help="requests in each step batch")
    parser.add_argument("--batches", type=int, default=4000, help="batches in the saturation run")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each latency run")
    parser.add_argument("--held", type=int, default=20_000, help="finished requests held in the steady-state run")
    parser.add_argument("--active", type=int, default=0, help="live requests held in a last steady-state run")
    parser.add_argument("--steady-seconds", type=float, default=40.0, help="length of the live-requests run")
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
            {
                "grpc_listen": f"unix://{directory}/bench.sock",
                "probes_dir": str(directory / "packs"),
                "model_names": [MODEL],
                "max_finished_requests": max(args.held, 1),
                # room for the live requests and the ids the latency runs make
                "max_active_requests": args.active + 100_000,
            },
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
            assert sidecar.process is not None
            pid = sidecar.process.pid
            fresh = rss_mb(pid)
            hold(stub, args.held, args.features, sidecar)
            held = rss_mb(pid)
            steps = 0.5 * rate / per_batch
            lat = latency(channel, stub, steps, args.seconds, args.requests_per_step, args.features)
            print()
            print(f"steady state: {args.held:,} finished reports held")
            print(
                f"RSS: {fresh:.0f} MB before, {held:.0f} MB after "
                f"({(held - fresh) / max(args.held, 1) * 10_000:.0f} MB per 10k finished requests)"
            )
            if lat:
                print(
                    f"at 50% load: {len(lat)} decisions, p50 {percentile(lat, 50):.2f} ms, "
                    f"p99 {percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms"
                )
            if args.active:
                hold(stub, args.active, args.features, sidecar, finish=False)
                live = rss_mb(pid)
                before = sidecar.metrics()
                lat = latency(channel, stub, steps, args.steady_seconds, args.requests_per_step, args.features)
                after = sidecar.metrics()
                print()
                print(
                    f"steady state: {args.active:,} live requests held as well, {args.steady_seconds:g} s at 50% load"
                )
                print(f"RSS: {live:.0f} MB ({(live - held) / args.active * 10_000:.0f} MB per 10k live requests)")
                print(f"collections in the window: {collections_between(before, after)}")
                if lat:
                    print(
                        f"at 50% load: {len(lat)} decisions, p50 {percentile(lat, 50):.2f} ms, "
                        f"p99 {percentile(lat, 99):.2f} ms, p99.9 {percentile(lat, 99.9):.2f} ms, max {max(lat):.2f} ms"
                    )
            sidecar.stop()


if __name__ == "__main__":
    main()
