"""Sidecar memory per request, in one process: active requests and finished reports.

Builds a Scorer with a pack of F features and 4 probes (max, mean, ema, max), feeds it N
requests of two steps each (a prompt step of 8 tokens and one response token), with or
without end markers, and prints the RSS added, the rows absorbed per second, the objects
the garbage collector tracks and the time of one full collection.

    python bench/request_memory.py [--features 68] [--requests 100000] [--finished]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from prometheus_client import CollectorRegistry
from synthetic import batch, end, summary, write_pack

from monitor.config import SidecarSettings
from monitor.pack import load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.scorer import Scorer


def rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=68)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--finished", action="store_true", help="end every request (finished reports)")
    args = parser.parse_args()
    features = args.features
    directory = Path(tempfile.mkdtemp())
    write_pack(
        directory,
        features=[{"name": f"f{i}", "layer": 14, "threshold": 0.5} for i in range(features)],
        probes=[
            {
                "name": f"p{k}",
                "concept": "c",
                "features": [f"f{i}" for i in range(k, features, 4)],
                "aggregation": kind,
                "threshold": 0.9,
            }
            for k, kind in enumerate(["max", "mean", "ema", "max"])
        ],
    )
    settings = SidecarSettings(max_active_requests=args.requests, max_finished_requests=args.requests)
    scorer = Scorer(settings, SidecarMetrics(CollectorRegistry()))
    scorer.set_packs(load_pack_dir(directory))
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    for first in range(0, args.requests, 1000):
        ids = [f"r{i}" for i in range(first, min(args.requests, first + 1000))]
        scorer.apply(batch([summary(r, [0.3] * features, 0, n=8, scope=pb.TOKEN_SCOPE_PROMPT) for r in ids]))
        ends = [end(r) for r in ids] if args.finished else []
        scorer.apply(batch([summary(r, [0.3] * features, 8) for r in ids], ends=ends))
        scorer.compact(scorer.drain_closed())
    elapsed = time.perf_counter() - started
    gc.collect()
    added = rss_mb() - before
    timed = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - timed
    kind = "finished" if args.finished else "active"
    print(
        f"{args.requests:,} {kind} requests x {features} features: +{added:.0f} MB "
        f"({added / args.requests * 10_000:.0f} MB per 10k), {2 * args.requests / elapsed:,.0f} rows/s, "
        f"{len(gc.get_objects()):,} tracked objects, full collection {full * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
