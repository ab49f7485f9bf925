"""What recording the forensic pages' traces costs the scorer (sidecar.ui.enabled).

In one process, on the shipped pack (68 features, 4 probes), folds the same decode traffic
(--requests concurrent requests, one step batch per decode step, each request ending after
--tokens tokens) through a Scorer with the pages off and on, alternating rounds, and prints
the batches per second of each and the ratios on/off and off/off (the noise of this
machine). The traces are kept for flagged requests (ui.keep flagged, the default) or for
all with --keep-all.

    python bench/trace_overhead.py [--requests 32] [--tokens 256] [--rounds 4] [--keep-all]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.config import SidecarSettings, UiSettings
from monitor.pack import load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.scorer import Scorer

PACKS = Path(__file__).resolve().parent.parent / "probes" / "SmolLM2-135M-Instruct"


def traffic(pack, requests: int, tokens: int, seed: int = 0) -> list[pb.StepBatch]:
    """Decode steps of ``requests`` requests (columnar batches), then their end markers."""
    rng = np.random.default_rng(seed)
    features = len(pack.spec.features)
    ids = [f"r{i}" for i in range(requests)]
    batches = []
    for step in range(tokens):
        values = rng.normal(0.0, 1.0, (requests, features)).astype("<f4")
        batch = pb.StepBatch(model_name=pack.spec.model.name, pack=pack.name, pack_version=pack.version, step=step)
        columns = batch.columns
        columns.request_id.extend(ids)
        columns.scope.extend([pb.TOKEN_SCOPE_RESPONSE] * requests)
        columns.first_position.extend([64 + step] * requests)
        columns.num_tokens.extend([1] * requests)
        columns.max = values.tobytes()
        columns.argmax_position = np.full((requests, features), 64 + step, "<i8").tobytes()
        columns.sum = values.tobytes()
        columns.count_above = (values > 0.5).astype("<u4").tobytes()
        batches.append(batch)
    batches.append(
        pb.StepBatch(
            model_name=pack.spec.model.name,
            pack=pack.name,
            pack_version=pack.version,
            step=tokens,
            ends=[pb.RequestEnd(request_id=i, finish_reason=pb.FINISH_REASON_STOP) for i in ids],
        )
    )
    return batches


def rate(enabled: bool, keep: str, packs, batches: list[pb.StepBatch]) -> float:
    settings = SidecarSettings(ui=UiSettings(enabled=enabled, keep=keep))
    scorer = Scorer(settings, SidecarMetrics(CollectorRegistry()), served=[packs.packs[0].spec.model.name])
    scorer.set_packs(packs)
    decoded = [(b, scorer.validate(b)) for b in batches]
    start = time.perf_counter()
    for batch, columns in decoded:
        scorer.apply(batch, columns)
        scorer.drain_closed()
    return len(batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--keep-all", action="store_true", help="keep every request's trace (ui.keep: all)")
    args = parser.parse_args()
    packs = load_pack_dir(PACKS)
    pack = packs.packs[0]
    batches = traffic(pack, args.requests, args.tokens)
    keep = "all" if args.keep_all else "flagged"
    rate(True, keep, packs, batches[: len(batches) // 4])  # warm-up
    off, off2, on = [], [], []
    for _ in range(args.rounds):
        off.append(rate(False, keep, packs, batches))
        on.append(rate(True, keep, packs, batches))
        off2.append(rate(False, keep, packs, batches))
    med = statistics.median
    print(
        f"pack {pack.name}: {len(pack.spec.features)} features, {len(pack.spec.probes)} probes; "
        f"{args.requests} requests x {args.tokens} decode steps; traces kept: {keep}; {args.rounds} rounds"
    )
    print(f"  pages off: {med(off):8.0f} batches/s ({med(off) * args.requests:,.0f} tokens/s)")
    print(f"  pages on:  {med(on):8.0f} batches/s ({med(on) * args.requests:,.0f} tokens/s)")
    print(f"  on/off  {med(on) / med(off):.3f}   off/off (noise) {med(off2) / med(off):.3f}")


if __name__ == "__main__":
    main()
