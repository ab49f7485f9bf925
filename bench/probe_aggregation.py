"""Probe aggregations, training granularity and layer ensembles compared out of distribution.

The protocol of ``saemon probes eval --held-out`` (leave one source out, AUROC against the
source's label 0 and recall at the FPR on held-out controls, 95% stratified bootstrap
intervals), on one forward pass of the data kept per token (:func:`probe_ood.cached_tokens`).
For every held-out source, three ways to fit a linear direction on the other sources:

- ``response``: the recipe of ``saemon probes train`` (logistic regression on whole-response
  means; each candidate layer, then the best two, chosen on calib);
- ``token``: the same regression on the response's tokens, each labelled with its response's
  label (per-token training; at the layers the recipe chose, ``--tokens`` tokens per response
  evenly spaced, each response weighing 1 in all);
- ``ensemble``: one regression per candidate layer on the means, their logits averaged.

Each direction scores every token of the measured responses, and the per-token logits are
folded into a response score by each aggregation: judged at the end (``mean``, ``top4``:
mean of the 4 highest tokens, ``ema-end``) or while the response streams, as the highest
value once ``min_tokens`` tokens are in (``running-mean``, ``max``, ``window8``/``16``: the
mean of the last 8/16 tokens, ``ema``: exponential moving average, ``count16``: tokens with
a positive logit among the last 16). ``monitor`` says which the sidecar can run as it is
(``saemon probes train`` makes ``mean``).

    python bench/probe_aggregation.py --data probe-data/deception.jsonl --data probe-data/control.jsonl \
        [--concept deception] [--fits response,token,ensemble] [--tokens 8] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probe_ood import Tokens, cached_tokens

from monitor import model as models
from monitor.config import load_settings
from monitor.lab.datasets import read_datasets
from monitor.lab.ood import Folds, SourceResult, protocol_examples, sources_of
from monitor.lab.pooling import MIN_TOKENS
from monitor.lab.train import TrainSettings, fit_logistic, sample_weights, stacked
from monitor.sae.activations import load_model


def _ema(s: np.ndarray, alpha: float) -> np.ndarray:
    """The monitor's ema after each token (the first token starts it)."""
    out = np.empty_like(s)
    value = s[0]
    for t, x in enumerate(s):
        value = x if t == 0 else value * (1 - alpha) + x * alpha
        out[t] = value
    return out


def _windowed(s: np.ndarray, width: int) -> np.ndarray:
    """Mean of the last ``width`` tokens after each token (of all so far before ``width``)."""
    c = np.r_[0.0, np.cumsum(s)]
    t = np.arange(1, len(s) + 1)
    lo = np.maximum(t - width, 0)
    return (c[t] - c[lo]) / (t - lo)


def _streamed(values: np.ndarray, min_tokens: int) -> float:
    """The highest running value once ``min_tokens`` are in (the last, for shorter responses)."""
    return float(values[min_tokens - 1 :].max()) if len(values) >= min_tokens else float(values[-1])


@dataclass(frozen=True)
class Aggregation:
    name: str
    fold: Callable[[np.ndarray, int], float]  # per-token logits, min_tokens -> response score
    streams: bool  # decides while the response streams (the highest value so far)
    monitor: str  # how the sidecar runs it ("-": it does not)


AGGREGATIONS = (
    Aggregation("mean", lambda s, m: float(s.mean()), False, "mean"),
    Aggregation("top4", lambda s, m: float(np.sort(s)[-4:].mean()), False, "-"),
    Aggregation("ema-end", lambda s, m: float(_ema(s, 0.1)[-1]), False, "ema 0.1, end"),
    Aggregation("running-mean", lambda s, m: _streamed(np.cumsum(s) / np.arange(1, len(s) + 1), m), True, "mean"),
    Aggregation("max", lambda s, m: _streamed(np.maximum.accumulate(s), m), True, "max"),
    Aggregation("window8", lambda s, m: _streamed(_windowed(s, 8), m), True, "-"),
    Aggregation("window16", lambda s, m: _streamed(_windowed(s, 16), m), True, "-"),
    Aggregation("ema0.05", lambda s, m: _streamed(_ema(s, 0.05), m), True, "ema 0.05"),
    Aggregation("ema0.1", lambda s, m: _streamed(_ema(s, 0.1), m), True, "ema 0.1"),
    Aggregation("ema0.2", lambda s, m: _streamed(_ema(s, 0.2), m), True, "ema 0.2"),
    Aggregation("count16", lambda s, m: _streamed(16 * _windowed((s > 0).astype(float), 16), m), True, "window_count"),
)

#: A direction per layer, {layer: (weights, bias)}: a token's logit is the sum over the layers.
Direction = dict[int, tuple[np.ndarray, float]]


def token_rows(tokens: Tokens, examples: np.ndarray, per_response: int) -> tuple[np.ndarray, np.ndarray]:
    """(token row indices, their example) for up to ``per_response`` tokens of each example,
    evenly spaced over its response."""
    rows, owner = [], []
    for i in examples:
        lo, hi = tokens.offsets[i], tokens.offsets[i + 1]
        picked = np.unique(np.linspace(lo, hi - 1, min(per_response, hi - lo)).round().astype(np.int64))
        rows.append(picked)
        owner.append(np.full(len(picked), i))
    return np.concatenate(rows), np.concatenate(owner)


def split_layers(layers, weights: np.ndarray, bias: float) -> Direction:
    """One regression over several layers' inputs side by side, as a direction per layer."""
    d = len(weights) // len(layers)
    return {layer: (weights[k * d : (k + 1) * d], bias if k == 0 else 0.0) for k, layer in enumerate(layers)}


class Fitter:
    """The three fits of one fold; the recipe's fit (and so its layers) computed once."""

    def __init__(self, folds: Folds, tokens: Tokens, per_response: int) -> None:
        self.folds, self.tokens, self.per_response = folds, tokens, per_response
        self.recipe: dict[tuple[str, ...], tuple] = {}

    def recipe_fit(self, sources) -> tuple:
        key = tuple(sources)
        if key not in self.recipe:
            self.recipe[key] = self.folds.fit(sources)
        return self.recipe[key]

    def fit(self, kind: str, sources) -> Direction:
        folds, pooled = self.folds, self.folds.pooled
        if kind == "response":
            return split_layers(*self.recipe_fit(sources))
        train, calib, weight = folds.training(sources)
        y_calib = folds.labels[calib]
        if kind == "ensemble":
            per = {}
            for layer in folds.settings.layers:
                x = pooled.layers[layer]
                fitted = fit_logistic(x[train], folds.labels[train], x[calib], y_calib, sample_weight=weight)
                per[layer] = (fitted.weights / len(folds.settings.layers), fitted.bias / len(folds.settings.layers))
            return per
        if kind != "token":
            raise SystemExit(f"--fits: unknown fit {kind!r} (response, token, ensemble)")
        layers = self.recipe_fit(sources)[0]
        rows, owner = token_rows(self.tokens, train, self.per_response)
        x = np.concatenate([self.tokens.rows[layer][rows] for layer in layers], axis=1).astype(np.float32)
        token_weight = sample_weights(folds.examples, owner, folds.settings.control_weight)
        fitted = fit_logistic(
            x,
            folds.labels[owner],
            stacked(pooled, layers)[calib],
            y_calib,
            grid=(0.01, 0.1),
            sample_weight=token_weight,
        )
        return split_layers(layers, fitted.weights, fitted.bias)


def token_logits(direction: Direction, tokens: Tokens, examples: np.ndarray) -> dict[int, np.ndarray]:
    """Every token's logit for each example."""
    rows = np.concatenate([np.arange(tokens.offsets[i], tokens.offsets[i + 1]) for i in examples])
    total = np.zeros(len(rows))
    for layer, (w, b) in direction.items():
        total += tokens.rows[layer][rows].astype(np.float32) @ w.astype(np.float32) + b
    out, at = {}, 0
    for i in examples:
        n = tokens.offsets[i + 1] - tokens.offsets[i]
        out[int(i)] = total[at : at + n]
        at += n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--concept", default="deception")
    parser.add_argument("--source-key", default="dataset")
    parser.add_argument("--fits", default="response,token,ensemble")
    parser.add_argument("--aggregations", default=",".join(a.name for a in AGGREGATIONS))
    parser.add_argument("--tokens", type=int, default=8, help="tokens per response for the token fit")
    parser.add_argument("--layers", default="6,9,12,15,18,21,24")
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    settings = TrainSettings(layers=tuple(int(x) for x in args.layers.split(",")))
    examples = protocol_examples(read_datasets([Path(p) for p in args.data]), args.concept)
    sources = sources_of(examples, args.concept, args.source_key)
    settings_ = load_settings()
    path = models.pull(settings_) if settings_.model.path is None else models.model_path(settings_)
    model, tokenizer, _ = load_model(path)
    started = time.perf_counter()
    pooled, tokens = cached_tokens(model, tokenizer, examples, settings.layers, path)
    print(
        f"{len(examples)} examples, {tokens.offsets[-1]} response tokens at layers {list(settings.layers)}: "
        f"{time.perf_counter() - started:.0f} s"
    )
    folds = Folds(pooled, examples, args.concept, args.source_key, settings, args.fpr, args.resamples)
    wanted = [a for a in AGGREGATIONS if a.name in args.aggregations.split(",")]
    measured = np.unique(np.r_[folds.of(sources, "test"), folds.test_controls])
    fitter = Fitter(folds, tokens, args.tokens)
    results: dict[tuple[str, str], list[SourceResult]] = {}
    for fit in args.fits.split(","):
        for k, held in enumerate([*sources, None]):
            trained_on = [s for s in sources if s != held]
            started = time.perf_counter()
            direction = fitter.fit(fit, trained_on)
            logits = token_logits(direction, tokens, measured)
            layers = tuple(direction)
            for aggregation in wanted:
                scores = np.full(len(examples), np.nan)
                for i, s in logits.items():
                    scores[i] = aggregation.fold(s, MIN_TOKENS)
                on = [held] if held is not None else sources
                r = folds.result(scores, layers, trained_on, on, k)
                results.setdefault((fit, aggregation.name), []).append(r)
            print(
                f"# {fit}, held out {held or '(none: in-source)'}: fitted and scored in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    print()
    print(f"recall at {args.fpr:.0%} FPR on held-out controls; 95% bootstrap intervals ({args.resamples} resamples)")
    print(f"{'fit':<9} {'aggregation':<13} {'held out':<20} {'AUROC':<24} {'recall':<24}")
    for (fit, name), rows in results.items():
        for r in rows:
            label = r.source if len(r.source.split(", ")) == 1 else "(in-source)"
            print(f"{fit:<9} {name:<13} {label:<20} {r.auroc!s:<24} {r.recall!s:<24}")
    print()
    print("summary over the held-out sources (in-source beside)")
    print(
        f"{'fit':<9} {'aggregation':<13} {'streams':<8} {'monitor':<13} {'min AUROC':>9} {'mean AUROC':>10} "
        f"{'min recall':>10} {'mean recall':>11} {'in-source AUROC / recall':>25}"
    )
    by_name = {a.name: a for a in AGGREGATIONS}
    for (fit, name), rows in results.items():
        held, inside = rows[:-1], rows[-1]
        aurocs = [r.auroc.value for r in held if r.auroc.value is not None]
        recalls = [r.recall.value for r in held if r.recall.value is not None]
        a = by_name[name]
        print(
            f"{fit:<9} {name:<13} {'yes' if a.streams else 'no':<8} {a.monitor:<13} {min(aurocs):>9.3f} "
            f"{np.mean(aurocs):>10.3f} {min(recalls):>10.3f} {np.mean(recalls):>11.3f} "
            f"{inside.auroc.value:>14.3f} / {inside.recall.value:.3f}"
        )


if __name__ == "__main__":
    main()
