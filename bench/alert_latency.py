"""Alert latency: from the probe's decision to the receiver having the notification.

Starts redis-server, two HTTP receivers on loopback (a webhook and an Alertmanager-style
/api/v2/alerts endpoint) and a real `saemon serve`, then streams decode steps over gRPC at a
fixed rate (the load) while, every --fire-every seconds, one request trips one of P probes
and ends two steps later: one incident firing, then resolving. For every alert a receiver
gets, latency = arrival time - the decision's time (startsAt for firing, endsAt for
resolved), so it covers scoring, the audit stream, the consumer group and HTTP.

Scenarios, side by side in one run: idle vs under load, through Redis vs from memory (no
Redis configured), and with the webhook's default 0.1 s grouping window.

    python bench/alert_latency.py [--seconds 8] [--steps-per-second 200] [--requests-per-step 32]
"""

from __future__ import annotations

import argparse
import calendar
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from receivers import HttpReceiver
from synthetic import write_pack

from monitor.harness.redis_server import RedisServer
from monitor.harness.sidecar import SidecarProcess
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc

FEATURES = 24
PROBES = 20


def parse_rfc3339(stamp: str) -> int:
    """'2026-11-21T22:16:34.63283968Z' -> Unix ns."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


def latencies(receiver: HttpReceiver, webhook: bool) -> list[float]:
    out = []
    for request in receiver.received:
        alerts = request.json["alerts"] if webhook else request.json
        for alert in alerts:
            resolved = alert.get("status") == "resolved" if webhook else parse_rfc3339(alert["endsAt"]) <= request.at_ns
            # Runs are shorter than the 60 s re-send interval: every firing alert is a new incident.
            decided = parse_rfc3339(alert["endsAt"] if resolved else alert["startsAt"])
            out.append((request.at_ns - decided) / 1e9)
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def steps(args, stop: threading.Event, model: str):
    """Decode steps at the target rate; every fire_every seconds one request fires probe k."""
    period = 1.0 / args.steps_per_second if args.steps_per_second else 0.0
    next_fire, fired, step, ending = time.monotonic(), 0, 0, {}
    start = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        requests = []
        if args.steps_per_second:
            for r in range(args.requests_per_step):
                requests.append(
                    pb.RequestSummary(
                        request_id=f"load{r}-{step // 256}",
                        scope=pb.TOKEN_SCOPE_RESPONSE,
                        first_position=step,
                        num_tokens=1,
                        max=[0.1] * FEATURES,
                        argmax_position=[step] * FEATURES,
                        sum=[0.1] * FEATURES,
                        count_above=[0] * FEATURES,
                    )
                )
        ends = [pb.RequestEnd(request_id=rid) for rid, due in list(ending.items()) if due <= step]
        for end in ends:
            del ending[end.request_id]
        if now >= next_fire:
            k = fired % PROBES
            values = [0.1] * FEATURES
            values[k] = 0.95
            rid = f"fire{fired}"
            requests.append(
                pb.RequestSummary(
                    request_id=rid,
                    scope=pb.TOKEN_SCOPE_RESPONSE,
                    first_position=0,
                    num_tokens=1,
                    max=values,
                    argmax_position=[0] * FEATURES,
                    sum=values,
                    count_above=[0] * FEATURES,
                )
            )
            ending[rid] = step + 2
            fired += 1
            next_fire += args.fire_every
        yield pb.IngestRequest(
            batches=[
                pb.StepBatch(
                    model_name=model,
                    pack="bench",
                    pack_version="1",
                    step=step,
                    produced_unix_nanos=time.time_ns(),
                    requests=requests,
                    ends=ends,
                )
            ]
        )
        step += 1
        wait = start + step * (period or 0.01) - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def scenario(args, tmp: Path, packs: Path, name: str, redis_url: str | None, group_wait: float, load: bool) -> dict:
    directory = tmp / name
    with HttpReceiver() as hook, HttpReceiver() as am:
        process = SidecarProcess(
            directory,
            {"grpc_listen": f"unix://{directory}/s.sock", "probes_dir": str(packs)},
            redis={"url": redis_url},
            alerts={
                "consumer_name": name,
                "webhooks": [{"name": "hook", "url": hook.url, "group_wait_seconds": group_wait}],
                "alertmanagers": [{"name": "am", "url": am.url}],
            },
        )
        with process:
            stub = monitor_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(f"unix://{directory}/s.sock"))
            stop = threading.Event()
            run_args = argparse.Namespace(**{**vars(args), "steps_per_second": args.steps_per_second if load else 0})
            timer = threading.Timer(args.seconds, stop.set)
            timer.start()
            stub.Ingest(steps(run_args, stop, "SmolLM2-135M-Instruct"), timeout=args.seconds + 60)
            process.wait_idle()
            time.sleep(1.0)  # let the last notifications arrive
            dropped = sum(v for (n, _), v in process.metrics().items() if n == "saemon_events_dropped_total")
            process.stop()
        hook_lat, am_lat = latencies(hook, True), latencies(am, False)
    return {"name": name, "hook": hook_lat, "am": am_lat, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--steps-per-second", type=float, default=200.0)
    parser.add_argument("--requests-per-step", type=int, default=32)
    parser.add_argument("--fire-every", type=float, default=0.1, help="seconds between incidents")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        packs = tmp / "packs"
        packs.mkdir()
        write_pack(
            packs,
            name="bench",
            features=[{"name": f"f{i}", "layer": 14, "threshold": 0.5} for i in range(FEATURES)],
            probes=[
                {
                    "name": f"p{k}",
                    "concept": f"concept_{k}",
                    "features": [f"f{k}"],
                    "aggregation": "max",
                    "threshold": 0.8,
                    "severity": "critical",
                }
                for k in range(PROBES)
            ],
        )
        with RedisServer(tmp / "redis") as redis_server:
            runs = [
                scenario(args, tmp, packs, "redis-idle", redis_server.url, 0.0, load=False),
                scenario(args, tmp, packs, "redis-load", redis_server.url, 0.0, load=True),
                scenario(args, tmp, packs, "memory-load", None, 0.0, load=True),
                scenario(args, tmp, packs, "redis-load-gw0.1", redis_server.url, 0.1, load=True),
            ]
    load = args.steps_per_second * args.requests_per_step * FEATURES
    print(
        f"load: {args.steps_per_second:.0f} steps/s x {args.requests_per_step} requests x {FEATURES} features "
        f"= {load / 1e3:.0f}k feature summaries/s; one incident every {args.fire_every} s over {PROBES} probes"
    )
    print(f"{'scenario':<18} {'receiver':<12} {'alerts':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'dropped':>8}")
    for run in runs:
        for receiver in ("hook", "am"):
            values = run[receiver]
            print(
                f"{run['name']:<18} {receiver:<12} {len(values):>6} {quantile(values, 0.5) * 1e3:>8.1f} "
                f"{quantile(values, 0.99) * 1e3:>8.1f} {max(values, default=float('nan')) * 1e3:>8.1f} "
                f"{run['dropped']:>8.0f}"
            )
    base = quantile(runs[0]["hook"], 0.99)
    print(
        f"webhook p99 under load / idle: {quantile(runs[1]['hook'], 0.99) / base:.2f}x; "
        f"Redis path / memory path under load: {quantile(runs[1]['hook'], 0.99) / quantile(runs[2]['hook'], 0.99):.2f}x"
    )


if __name__ == "__main__":
    main()
