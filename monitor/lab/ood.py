"""``saemon probes eval --held-out``: does the probe recipe hold on data it never shaped?

**Leave one source out.** For every source S of a concept (its examples' ``meta[key]``,
by default ``dataset``: facts, instructed, roleplay for deception), the linear-probe recipe
of ``saemon probes train`` (each candidate layer, then the best two, chosen on calib) is
fitted on the *other* sources only (their train split, with the train controls as training
adds them; their calib split to choose the layer and the regularisation) and measured on
S's test split and the held-out controls (the control test split):

- AUROC of S's label 1 against S's label 0 (the hard negatives: honest answers, safe code);
- recall at ``fpr`` on benign controls: the threshold lets ``fpr`` of the held-out
  controls fire (the operating point on-call lives with), and the recall is the share of
  S's label-1 examples above it.

Each figure has a stratified bootstrap interval (positives, negatives and controls
resampled apart, ``resamples`` times, 2.5th-97.5th percentile), so a difference smaller
than the intervals is not read as a gain. The **cross-source matrix** fits on one source
alone and measures on each source's test split (its diagonal is the in-source figure).

Scores are each response's mean of the probe's logit, what the monitor's
``mean``-aggregated linear probe judges when a request ends (``decide: end``; see
:mod:`monitor.lab.train`), computed from the pooled means without the monitor's code path;
with the settings' ``aggregation: ema``, the same fits score each response's ema at its
end (the pooled ema vectors: the ema of ``x . w + b`` is ``ema(x) . w + b``).
Only test-split examples are measured, so no entity or template the fit saw is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from monitor.errors import ProbeDataError
from monitor.lab.datasets import CONTROL, Example
from monitor.lab.evaluate import auroc
from monitor.lab.pooling import Pooled
from monitor.lab.train import TrainSettings, fit_linear, fit_logistic, sample_weights, stacked
from monitor.pack import HeldOutQuality, ProbePack, QualitySpec, save_pack

#: Bootstrap resamples per figure; 1000 keeps the interval's own noise under ~0.01.
RESAMPLES = 1000
#: The recipe measured by default: `saemon probes train`'s.
RECIPE = TrainSettings()
#: What a fold fits: logistic = the recipe of `saemon probes train` (layer or best two chosen
#: on calib); all-layers = one regression over every candidate layer's mean; diffmean = the
#: difference of the two labels' means at the layer best on calib (no regression at all).
METHODS = ("logistic", "all-layers", "diffmean")


@dataclass(frozen=True)
class Interval:
    """A figure and its 95% bootstrap interval (None where the data cannot give one)."""

    value: float | None
    low: float | None
    high: float | None

    def __str__(self) -> str:
        if self.value is None:
            return "-"
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class SourceResult:
    """One fit measured on one source's test split."""

    source: str  # measured on
    trained_on: tuple[str, ...]
    layers: tuple[int, ...]
    positives: int
    negatives: int
    controls: int
    auroc: Interval
    recall: Interval  # at the report's fpr on the held-out controls


@dataclass(frozen=True)
class OodReport:
    concept: str
    key: str
    fpr: float
    resamples: int
    method: str
    aggregation: str  # how each response's token scores are folded: "mean" or "ema <alpha>"
    held_out: list[SourceResult]  # leave one source out, one row per source
    pooled: SourceResult  # fitted on every source, measured on all their test splits
    matrix: dict[str, dict[str, Interval]]  # trained on -> measured on -> AUROC


def recall_at_fpr(positives: np.ndarray, controls: np.ndarray, fpr: float) -> float | None:
    """The share of ``positives`` above the threshold at which ``fpr`` of ``controls`` fire
    (``floor(fpr * n)`` controls above it; a probe fires on a score above its threshold)."""
    if not len(positives) or not len(controls):
        return None
    allowed = int(np.floor(fpr * len(controls) + 1e-9))
    threshold = np.sort(controls)[::-1][min(allowed, len(controls) - 1)]
    return float(np.mean(positives > threshold))


def pair_auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUROC of ``positives`` against ``negatives`` (Mann-Whitney, ties count half): the same
    figure as scikit-learn's, without its per-call overhead, for the bootstrap's thousands."""
    ordered = np.sort(negatives)
    below = np.searchsorted(ordered, positives, "left")
    tied = np.searchsorted(ordered, positives, "right") - below
    return float((below + tied / 2).sum() / (len(positives) * len(negatives)))


def bootstrap(
    positives: np.ndarray,
    negatives: np.ndarray,
    controls: np.ndarray,
    fpr: float,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[Interval, Interval]:
    """(AUROC of positives vs negatives, recall at ``fpr`` on controls), each with its 95%
    stratified bootstrap interval."""
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    value = auroc(labels, np.r_[positives, negatives]) if len(positives) and len(negatives) else None
    recall = recall_at_fpr(positives, controls, fpr)
    rng = np.random.default_rng(seed)
    aurocs, recalls = [], []
    for _ in range(resamples if resamples > 0 else 0):
        p = positives[rng.integers(0, len(positives), len(positives))] if len(positives) else positives
        n = negatives[rng.integers(0, len(negatives), len(negatives))] if len(negatives) else negatives
        c = controls[rng.integers(0, len(controls), len(controls))] if len(controls) else controls
        if value is not None:
            aurocs.append(pair_auroc(p, n))
        if recall is not None:
            recalls.append(recall_at_fpr(p, c, fpr))
    return _interval(value, aurocs), _interval(recall, recalls)


def _interval(value: float | None, samples: list) -> Interval:
    values = [s for s in samples if s is not None]
    if value is None or not values:
        return Interval(value, None, None)
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(value, float(low), float(high))


def check_rate(fpr: float) -> None:
    if not 0 < fpr < 1:
        raise ProbeDataError(f"--fpr {fpr}: expected a rate between 0 and 1, e.g. 0.01")


def sources_of(examples: Sequence[Example], concept: str, key: str) -> list[str]:
    """The concept's sources, refusing examples without one."""
    own = [e for e in examples if e.concept == concept]
    if not own:
        raise ProbeDataError(f"the data has no examples of concept {concept!r}; pass its JSONL with --data")
    missing = sum(1 for e in own if key not in e.meta)
    if missing:
        raise ProbeDataError(
            f"{missing} {concept} example(s) have no meta.{key}, the source the held-out protocol leaves "
            f"out; give every example one (or pick another key with --source-key)"
        )
    sources = sorted({e.meta[key] for e in own})
    if len(sources) < 2:
        raise ProbeDataError(
            f"concept {concept!r} has one source ({sources[0]!r} in meta.{key}): leaving one out needs at "
            "least two; add data from another source or pick another key with --source-key"
        )
    return sources


class Folds:
    """Fits the recipe on some sources and scores others, over one pooling of the data."""

    def __init__(
        self,
        pooled: Pooled,
        examples: Sequence[Example],
        concept: str,
        key: str,
        settings: TrainSettings,
        fpr: float,
        resamples: int,
        method: str = "logistic",
    ) -> None:
        if len(pooled.owner) != len(examples):
            raise ValueError("the held-out protocol scores whole responses: pool without prefixes")
        if settings.aggregation == "ema" and not pooled.ema:
            raise ValueError("aggregation ema scores the pooled ema vectors: pool with ema_alpha")
        self.pooled, self.examples, self.concept, self.key = pooled, examples, concept, key
        self.settings, self.fpr, self.resamples = settings, fpr, resamples
        if method not in METHODS:
            raise ProbeDataError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
        self.method = method
        self.labels = np.array([e.label for e in examples])
        self.source = np.array([e.meta.get(key, "") if e.concept == concept else "" for e in examples])
        self.split = np.array([e.split for e in examples])
        self.is_concept = np.array([e.concept == concept for e in examples])
        self.is_control = np.array([e.concept == CONTROL for e in examples])
        self.test_controls = np.flatnonzero(self.is_control & (self.split == "test"))
        if not len(self.test_controls):
            raise ProbeDataError("no test-split control examples: pass the controls' JSONL (control.jsonl) with --data")

    def of(self, sources: Sequence[str], split: str) -> np.ndarray:
        return np.flatnonzero(self.is_concept & np.isin(self.source, list(sources)) & (self.split == split))

    def training(self, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train examples, calib examples, the train examples' weights) of a fit on
        ``sources``: their train split (with the train controls as the settings add them)
        and their calib split."""
        train = self.of(sources, "train")
        calib = self.of(sources, "calib")
        for split, rows in (("train", train), ("calib", calib)):
            if len(set(self.labels[rows].tolist())) < 2:
                raise ProbeDataError(
                    f"concept {self.concept!r}: the {split} split of {', '.join(sources)} needs examples of "
                    "both labels to fit on"
                )
        if self.settings.with_controls:
            train = np.r_[train, np.flatnonzero(self.is_control & (self.split == "train"))]
        return train, calib, sample_weights(self.examples, train, self.settings.control_weight)

    def fit(self, sources: Sequence[str]) -> tuple[tuple[int, ...], np.ndarray, float]:
        """The method fitted on ``sources``: (layers, weights, bias)."""
        train, calib, weight = self.training(sources)
        rows_train, rows_calib = self.pooled.full[train], self.pooled.full[calib]

        y_train, y_calib = self.labels[train], self.labels[calib]

        def fit_one(x: np.ndarray):
            return fit_logistic(x[rows_train], y_train, x[rows_calib], y_calib, sample_weight=weight)

        if self.method == "logistic":
            layers, fitted = fit_linear(self.pooled, self.settings.layers, fit_one, self.concept)
            return layers, fitted.weights, fitted.bias
        if self.method == "all-layers":
            layers = tuple(self.settings.layers)
            fitted = fit_one(stacked(self.pooled, layers))
            return layers, fitted.weights, fitted.bias
        # diffmean: the concept's label-1 mean minus its label-0 mean (train split, no controls),
        # per layer; the layer with the best calib AUROC kept. No bias: only the ranking counts.
        own = rows_train[self.is_concept[train]]
        own_labels = y_train[self.is_concept[train]]
        best: tuple[float, int, np.ndarray] | None = None
        for layer in self.settings.layers:
            x = self.pooled.layers[layer].astype(np.float64)
            direction = x[own[own_labels == 1]].mean(0) - x[own[own_labels == 0]].mean(0)
            calib_scores = x[rows_calib] @ direction
            area = pair_auroc(calib_scores[y_calib == 1], calib_scores[y_calib == 0])
            if best is None or area > best[0]:
                best = (area, layer, direction)
        assert best is not None
        return (best[1],), best[2].astype(np.float32), 0.0

    def measure(self, fit: tuple[tuple[int, ...], np.ndarray, float], trained_on, sources, seed: int) -> SourceResult:
        layers, weights, bias = fit
        if self.settings.aggregation == "ema":
            x = np.concatenate([self.pooled.ema[layer] for layer in layers], axis=1)
        else:
            x = stacked(self.pooled, layers)[self.pooled.full]
        scores = x.astype(np.float64) @ weights.astype(np.float64) + bias
        return self.result(scores, layers, trained_on, sources, seed)

    def result(self, scores: np.ndarray, layers, trained_on, sources, seed: int) -> SourceResult:
        """``scores`` (one per example; only the test split's are read) measured on the
        test split of ``sources`` and the held-out controls."""
        test = self.of(sources, "test")
        positives = scores[test[self.labels[test] == 1]]
        negatives = scores[test[self.labels[test] == 0]]
        controls = scores[self.test_controls]
        area, recall = bootstrap(positives, negatives, controls, self.fpr, self.resamples, seed)
        return SourceResult(
            source=", ".join(sources),
            trained_on=tuple(trained_on),
            layers=tuple(layers),
            positives=len(positives),
            negatives=len(negatives),
            controls=len(controls),
            auroc=area,
            recall=recall,
        )


def held_out_sources(
    pooled: Pooled,
    examples: Sequence[Example],
    concept: str,
    *,
    key: str = "dataset",
    fpr: float = 0.01,
    settings: TrainSettings = RECIPE,
    resamples: int = RESAMPLES,
    seed: int = 0,
    matrix: bool = True,
    method: str = "logistic",
) -> OodReport:
    """Leave-one-source-out and (with ``matrix``) the cross-source matrix, on one pooling
    (``pooled``: whole-response means of ``examples`` at ``settings.layers``)."""
    check_rate(fpr)
    sources = sources_of(examples, concept, key)
    folds = Folds(pooled, examples, concept, key, settings, fpr, resamples, method)
    held_out = []
    for k, source in enumerate(sources):
        others = [s for s in sources if s != source]
        held_out.append(folds.measure(folds.fit(others), others, [source], seed + k))
    everything = folds.measure(folds.fit(sources), sources, sources, seed + len(sources))
    grid: dict[str, dict[str, Interval]] = {}
    if matrix:
        for i, trained in enumerate(sources):
            fit = folds.fit([trained])
            grid[trained] = {
                measured: folds.measure(fit, [trained], [measured], seed + 100 * (i + 1) + j).auroc
                for j, measured in enumerate(sources)
            }
    folded = aggregation_label(settings.aggregation, settings.ema_alpha)
    return OodReport(concept, key, fpr, resamples, method, folded, held_out, everything, grid)


def aggregation_label(aggregation: str, ema_alpha: float) -> str:
    return f"ema {ema_alpha:g}" if aggregation == "ema" else aggregation


def format_ood(report: OodReport) -> str:
    fpr = f"{report.fpr:.0%}" if report.fpr >= 0.01 else f"{report.fpr:g}"
    lines = [
        f"{report.concept}, {report.method}, {report.aggregation}: leave one source out (meta.{report.key}); "
        "95% bootstrap intervals, "
        f"{report.resamples} resamples; recall at {fpr} FPR on the held-out controls",
        f"{'held out':<20} {'layers':<8} {'AUROC':<24} {'recall@' + fpr:<24} {'pos/neg/ctl':>13}",
    ]
    for r in [*report.held_out, report.pooled]:
        name = r.source if r in report.held_out else "(all, in-source)"
        counts = f"{r.positives}/{r.negatives}/{r.controls}"
        lines.append(f"{name:<20} {','.join(map(str, r.layers)):<8} {r.auroc!s:<24} {r.recall!s:<24} {counts:>13}")
    if report.matrix:
        sources = list(report.matrix)
        width = max(24, *(len(s) + 2 for s in sources))
        first = max(16, *(len(s) + 2 for s in sources))
        lines += ["", "cross-source AUROC (rows: trained on; columns: measured on)"]
        lines.append(" " * first + "".join(f"{s:<{width}}" for s in sources))
        for trained, row in report.matrix.items():
            lines.append(f"{trained:<{first}}" + "".join(f"{row[s]!s:<{width}}" for s in sources))
    return "\n".join(lines)


def to_json(report: OodReport) -> dict:
    return asdict(report)


def protocol_examples(examples: Sequence[Example], concept: str) -> list[Example]:
    """What the protocol reads, to pool once: the concept's examples and the train and test
    controls (the calib controls are not used; a fit without controls ignores the train ones)."""
    return [e for e in examples if e.concept == concept or (e.concept == CONTROL and e.split != "calib")]


def pool_for_protocol(
    model, tokenizer, examples: Sequence[Example], concept: str, key: str, settings: TrainSettings = RECIPE
) -> tuple[Pooled, list[Example]]:
    """(pooled whole-response means, the examples they are of), for :func:`held_out_sources`;
    bad data is refused before the model runs."""
    from monitor.lab.pooling import pool

    sources_of(examples, concept, key)
    chosen = protocol_examples(examples, concept)
    ema_alpha = settings.ema_alpha if settings.aggregation == "ema" else None
    pooled = pool(
        model, tokenizer, chosen, settings.layers, prefixes=0, min_tokens=settings.min_tokens, ema_alpha=ema_alpha
    )
    return pooled, chosen


def record(pack: ProbePack, report: OodReport) -> ProbePack:
    """Write the leave-one-source-out figures under ``quality.held_out`` of the pack's linear
    probe for the concept (the probe named after it, which the recipe makes)."""
    if report.method != "logistic":
        raise ProbeDataError(
            f"--record writes the figures of the recipe `saemon probes train` uses; {report.method!r} is "
            "not it: record with --method logistic"
        )
    targets = [p for p in pack.spec.probes if p.name == report.concept]
    if not targets:
        raise ProbeDataError(
            f"pack {pack.name} has no probe named {report.concept!r} (the linear probe `saemon probes train` "
            "makes for that concept) to record the held-out figures on"
        )
    folds = aggregation_label(targets[0].aggregation, targets[0].ema_alpha)
    if folds != report.aggregation:
        raise ProbeDataError(
            f"pack {pack.name}'s probe {report.concept!r} folds its tokens by {folds}; these figures were "
            f"measured with {report.aggregation}: measure with --aggregation {targets[0].aggregation}"
            + (f" --ema-alpha {targets[0].ema_alpha:g}" if targets[0].aggregation == "ema" else "")
        )

    def rounded(interval: Interval) -> tuple[float | None, tuple[float, float] | None]:
        if interval.value is None:
            return None, None
        if interval.low is None or interval.high is None:
            return round(interval.value, 4), None
        return round(interval.value, 4), (round(interval.low, 4), round(interval.high, 4))

    held_out = {}
    for r in report.held_out:
        area, area_interval = rounded(r.auroc)
        recall, recall_interval = rounded(r.recall)
        held_out[r.source] = HeldOutQuality(
            auroc=area,
            auroc_interval=area_interval,
            recall=recall,
            recall_interval=recall_interval,
            fpr=report.fpr,
            positives=r.positives,
            negatives=r.negatives,
            controls=r.controls,
        )
    probes = []
    for spec in pack.spec.probes:
        if spec is targets[0]:
            quality = (spec.quality or QualitySpec()).model_copy(update={"held_out": held_out})
            spec = spec.model_copy(update={"quality": quality})
        probes.append(spec)
    assert pack.directions is not None and pack.bias is not None
    return save_pack(pack.spec.model_copy(update={"probes": probes}), pack.directions, pack.bias, pack.path)
