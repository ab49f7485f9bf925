"""Probe methods compared out of distribution, on one pooling of the data.

Pools the concept's examples and the controls once (whole-response means at the candidate
layers of the served model), then runs the leave-one-source-out protocol of
``saemon probes eval --held-out`` for every method and control weight asked, and prints one
line per (method, held-out source): AUROC and recall at the FPR on held-out controls, each
with its 95% bootstrap interval, side by side.

    python bench/probe_ood.py --data probe-data/deception.jsonl --data probe-data/control.jsonl \
        [--concept deception] [--methods logistic,all-layers,diffmean] [--control-weights 0.05,0,0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor import model as models
from monitor.config import load_settings
from monitor.lab.datasets import digest, read_datasets
from monitor.lab.ood import METHODS, held_out_sources, protocol_examples, record
from monitor.lab.pooling import Pooled, ema_weights
from monitor.lab.train import TrainSettings
from monitor.pack import load_pack
from monitor.sae.activations import load_model

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "probe-ood"


@dataclasses.dataclass
class Tokens:
    """Every example's response rows at each layer (float16), example ``i``'s rows being
    ``rows[layer][offsets[i]:offsets[i + 1]]``: what other aggregations than the mean read."""

    offsets: np.ndarray
    rows: dict[int, np.ndarray]

    def of(self, i: int, layer: int) -> np.ndarray:
        return self.rows[layer][self.offsets[i] : self.offsets[i + 1]]


def cache_key(examples, layers, model_path: Path) -> str:
    """What a pooling depends on: the examples, the layers, the model's weights."""
    key = hashlib.sha256(digest(examples).encode() + repr(tuple(layers)).encode())
    for weights in sorted(model_path.glob("*.safetensors")):
        key.update(f"{weights.name}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode())
    return key.hexdigest()[:20]


def cached_tokens(model, tokenizer, examples, layers, model_path: Path) -> tuple[Pooled, Tokens]:
    """(whole-response means at ``layers``, float32; every response row, float16), from one
    forward pass kept under .cache/probe-ood by what it depends on, so comparing more methods
    or aggregations later costs no forward pass."""
    path = CACHE / f"tokens-{cache_key(examples, layers, model_path)}.npz"
    if path.exists():
        saved = np.load(path)
        offsets = saved["offsets"]
        n = len(offsets) - 1
        means = Pooled(np.arange(n), np.arange(n), {layer: saved[f"mean{layer}"] for layer in layers})
        return means, Tokens(offsets, {layer: saved[f"rows{layer}"] for layer in layers})
    from monitor.lab.scoring import residuals

    n = len(examples)
    per: dict[int, list] = {layer: [None] * n for layer in layers}
    means = {layer: np.zeros((n, model.config.hidden_size), np.float32) for layer in layers}
    for item in residuals(model, tokenizer, examples, layers):
        for layer in layers:
            values = item.rows[("response", layer)]
            means[layer][item.index] = values.mean(0).numpy()
            per[layer][item.index] = values.numpy().astype(np.float16)
    offsets = np.r_[0, np.cumsum([len(r) for r in per[layers[0]]])]
    rows = {layer: np.concatenate(per.pop(layer)) for layer in layers}
    CACHE.mkdir(parents=True, exist_ok=True)
    arrays = {"offsets": offsets, **{f"mean{n}": means[n] for n in layers}, **{f"rows{n}": rows[n] for n in layers}}
    np.savez(path, allow_pickle=False, **arrays)
    return Pooled(np.arange(n), np.arange(n), means), Tokens(offsets, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--concept", default="deception")
    parser.add_argument("--source-key", default="dataset")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--control-weights", default="0.05", help="comma-separated (0.05 is the recipe's)")
    parser.add_argument("--layers", default="6,9,12,15,18,21,24")
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--no-matrix", action="store_true")
    parser.add_argument("--aggregation", choices=["mean", "ema"], default="mean")
    parser.add_argument("--ema-alpha", type=float, default=0.1)
    parser.add_argument(
        "--record-pack", help="write the recipe's figures (logistic, the default control weight) into this pack"
    )
    args = parser.parse_args()
    settings = TrainSettings(
        layers=tuple(int(x) for x in args.layers.split(",")), aggregation=args.aggregation, ema_alpha=args.ema_alpha
    )
    examples = protocol_examples(read_datasets([Path(p) for p in args.data]), args.concept)
    settings_ = load_settings()
    path = models.pull(settings_) if settings_.model.path is None else models.model_path(settings_)
    model, tokenizer, _ = load_model(path)
    started = time.perf_counter()
    pooled, tokens = cached_tokens(model, tokenizer, examples, settings.layers, path)
    if args.aggregation == "ema":  # each response's ema at its end, from the kept tokens (float16)
        weights = [ema_weights(int(n), args.ema_alpha).numpy() for n in np.diff(tokens.offsets)]
        pooled.ema = {
            layer: np.stack([w @ tokens.of(i, layer).astype(np.float64) for i, w in enumerate(weights)]).astype(
                np.float32
            )
            for layer in settings.layers
        }
    print(f"pooled {len(examples)} examples at layers {list(settings.layers)} in {time.perf_counter() - started:.0f} s")
    print(f"recall at {args.fpr:.0%} FPR on held-out controls; 95% bootstrap intervals ({args.resamples} resamples)")
    print()
    print(f"{'method':<12} {'ctl w':>6}  {'held out':<20} {'layers':<10} {'AUROC':<24} {'recall':<24}")
    matrices = []
    for method in args.methods.split(","):
        for weight in (float(w) for w in args.control_weights.split(",")):
            fit = dataclasses.replace(settings, control_weight=weight, with_controls=weight > 0)
            report = held_out_sources(
                pooled,
                examples,
                args.concept,
                key=args.source_key,
                fpr=args.fpr,
                settings=fit,
                resamples=args.resamples,
                matrix=not args.no_matrix and method == "logistic" and weight == settings.control_weight,
                method=method,
            )
            for r in [*report.held_out, report.pooled]:
                name = r.source if r in report.held_out else "(in-source)"
                layers = ",".join(map(str, r.layers)) if len(r.layers) < 4 else f"{len(r.layers)} layers"
                print(f"{method:<12} {weight:>6g}  {name:<20} {layers:<10} {r.auroc!s:<24} {r.recall!s:<24}")
            if report.matrix:
                matrices.append(report)
            if args.record_pack and method == "logistic" and weight == settings.control_weight:
                record(load_pack(Path(args.record_pack)), report)
                print(f"recorded in {args.record_pack}")
    for report in matrices:
        print()
        print(f"cross-source AUROC, {report.method} (rows: trained on; columns: measured on)")
        sources = list(report.matrix)
        first = max(len(s) for s in sources) + 2
        print(" " * first + "".join(f"{s:<24}" for s in sources))
        for trained, row in report.matrix.items():
            print(f"{trained:<{first}}" + "".join(f"{row[s]!s:<24}" for s in sources))


if __name__ == "__main__":
    main()
