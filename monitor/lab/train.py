"""Train probes for a concept and write them as a pack the monitor loads.

Two kinds, both scored the way the monitor aggregates (``mean`` over the response tokens):

- **Linear probe** (Apollo Research 2025): L2 logistic regression (scikit-learn) on the
  residual stream averaged over each example's response tokens. Because the mean of
  ``x . w + b`` over tokens is ``mean(x) . w + b``, the monitor's ``mean``-aggregated
  identity feature is exactly the regression's logit. Standardisation is folded into the
  direction and bias. Each candidate layer and regularisation strength is fitted on the
  train split, then the best two layers together (one feature per layer, summed by the
  probe's weights), and the one with the best AUROC on the calib split is kept.
- **SAE-latent probe**: the SAE latents ranked by AUROC on the train split
  (:mod:`monitor.lab.discover`), the best few kept, and an L2 logistic regression over
  their mean activations; the pack carries each latent's encoder row as a feature and the
  regression as the probe's ``weights`` and ``intercept``. The score is a sum of a handful
  of named latents: the interpretable explanation of an alert beside the linear probe.

By default the probes are judged on the whole response when the request ends
(``decide: end``), the quantity they are fitted on; ``decide: running`` probes are fitted
on running means at several prefix lengths instead (see :class:`TrainSettings`).

Thresholds are then calibrated on benign control conversations at the target
false-positive rate (:mod:`monitor.lab.calibrate`) and the figures measured on the test
split (:mod:`monitor.lab.evaluate`) are recorded in the pack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from monitor.errors import ProbeDataError
from monitor.lab.datasets import CONTROL, Example
from monitor.lab.discover import rank_latents
from monitor.lab.latents import gate_threshold, latent_bank
from monitor.lab.pooling import MIN_TOKENS, Pooled, pool
from monitor.pack import FeatureSpec, ModelBinding, PackSpec, ProbePack, ProbeSpec, save_pack

log = logging.getLogger(__name__)

#: L2 strengths tried (scikit-learn's C = 1 / lambda; Apollo used 0.1 on standardised inputs).
C_GRID = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class TrainSettings:
    layers: tuple[int, ...] = (6, 9, 12, 15, 18, 21, 24)
    """Candidate layers for the linear probe: each alone, then the best two together (one
    regression over both layers' means, deployed as one feature per layer); the best on
    calib is kept."""
    latents: int = 32
    """SAE latents in the SAE-latent probe (small subsets generalise worse, see RESULTS)."""
    min_tokens: int = MIN_TOKENS
    decide: Literal["end", "running"] = "end"
    """end: the probes are judged on the whole response's mean when the request ends (what
    they are fitted on, Apollo's setting). running: they fire as soon as the running mean
    crosses, and are fitted on running means at ``prefixes`` lengths."""
    prefixes: int = 8
    """For running probes: running means per example the probe is fitted on (evenly spaced
    from ``min_tokens`` to the whole response), so it does not spike on the first tokens
    every response shares (a code block's opening fence); the calib AUROC is taken on the
    max over them, as the monitor fires."""
    with_controls: bool = True
    """Add the train split's control conversations as negatives (keeps benign chat low)."""
    control_weight: float = 0.05
    """Total weight of those controls relative to the concept's train examples: enough to
    push ordinary chat below deceptive answers, little enough not to dominate the fit."""
    aggregation: Literal["mean", "ema"] = "mean"
    """How the probes fold the token scores. mean: the whole response's mean, what they are
    fitted on. ema: the same fit, folded by an exponential moving average judged at the end
    (``decide: end`` only), so the last tokens, where a false claim usually sits, weigh most
    (bench/RESULTS.md: more recall at 1% control FPR out of distribution, not more AUROC)."""
    ema_alpha: float = 0.1
    """Weight of each new token in the ema (about the last 1/alpha tokens count)."""


@dataclass(frozen=True)
class Fitted:
    """A logistic regression folded back to raw inputs: logit = inputs . weights + bias."""

    weights: np.ndarray
    bias: float
    C: float
    calib_auroc: float


def fit_logistic(
    x_train,
    y_train,
    x_calib,
    y_calib,
    grid: Sequence[float] = C_GRID,
    sample_weight=None,
    calib_groups: np.ndarray | None = None,
) -> Fitted:
    """Standardise, fit L2 logistic regression per C, keep the best calib AUROC, fold the
    scaler into the weights so the deployed feature reads raw activations. With
    ``calib_groups`` (the example of each calib row) an example scores the max over its
    rows, as the monitor's firing score is the max over running means."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    mean = x_train.mean(0)
    scale = x_train.std(0)
    scale[scale < 1e-8] = 1.0
    best = None
    for C in grid:
        model = LogisticRegression(C=C, max_iter=5000)
        model.fit((x_train - mean) / scale, y_train, sample_weight=sample_weight)
        weights = model.coef_[0] / scale
        bias = float(model.intercept_[0] - (model.coef_[0] * mean / scale).sum())
        scores, labels = x_calib @ weights + bias, y_calib
        if calib_groups is not None:
            scores, labels = group_max(scores, calib_groups), group_first(y_calib, calib_groups)
        auroc = float(roc_auc_score(labels, scores))
        if best is None or auroc > best.calib_auroc + 1e-9:
            best = Fitted(weights.astype(np.float32), bias, C, auroc)
    assert best is not None
    return best


def group_max(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Max of ``values`` per group (groups as contiguous runs, in order of appearance)."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return np.maximum.reduceat(values, starts)


def group_first(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    return values[np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])]


def _split(examples: Sequence[Example], concept: str, split: str, with_controls: bool = False) -> np.ndarray:
    return np.array(
        [
            i
            for i, e in enumerate(examples)
            if e.split == split and (e.concept == concept or (with_controls and e.concept == CONTROL))
        ],
        dtype=np.int64,
    )


def train_pack(
    model,
    tokenizer,
    examples: Sequence[Example],
    concepts: Sequence[str],
    out: Path,
    *,
    model_name: str,
    settings: TrainSettings = TrainSettings(),
    sae=None,
    sae_name: str | None = None,
    pack_name: str = "safety",
    version: str = "1",
    severity: dict[str, str] | None = None,
) -> ProbePack:
    """Fit a linear probe (and, with ``sae``, an SAE-latent probe) per concept on the train
    split and write one pack (thresholds not yet calibrated: 0)."""
    # only what fitting reads: the concepts' train and calib splits, the train controls
    if settings.aggregation == "ema" and settings.decide != "end":
        raise ProbeDataError("ema-aggregated probes are judged at the end (decide end); running ones were not measured")
    examples = [
        e
        for e in examples
        if (e.concept in concepts and e.split in ("train", "calib"))
        or (settings.with_controls and e.concept == CONTROL and e.split == "train")
    ]
    labels = np.array([e.label for e in examples])
    for concept in concepts:
        for split in ("train", "calib"):
            y = labels[_split(examples, concept, split)]
            if len(set(y.tolist())) < 2:
                raise ProbeDataError(
                    f"concept {concept!r}: the {split} split needs examples of both labels (has {len(y)} "
                    f"with labels {sorted(set(y.tolist()))}); generate data with `saemon probes generate`"
                )
    gate = None
    if sae is not None and sae.activation == "topk":
        gate = gate_threshold(model, tokenizer, sae, [e for e in examples if e.split == "train"])
        log.info("TopK SAE: latents gated at the median k-th pre-activation %.3f", gate)
    bank = latent_bank(sae, sae_name or "sae", gate) if sae is not None else None
    log.info(
        "pooling %d examples at layers %s%s",
        len(examples),
        list(settings.layers),
        f" and {bank.size} SAE latents at layer {bank.layer}" if bank else "",
    )
    prefixes = settings.prefixes if settings.decide == "running" else 0
    pooled = pool(model, tokenizer, examples, settings.layers, bank, prefixes, settings.min_tokens)
    row_labels = labels[pooled.owner]

    features: list[FeatureSpec] = []
    probes: list[ProbeSpec] = []
    directions, biases = [], []
    for concept in concepts:
        train = _rows(pooled, _split(examples, concept, "train", settings.with_controls))
        calib = _rows(pooled, _split(examples, concept, "calib"))
        weight = sample_weights(examples, pooled.owner[train], settings.control_weight)

        def fit(
            x: np.ndarray, train: np.ndarray = train, calib: np.ndarray = calib, weight: np.ndarray = weight
        ) -> Fitted:
            return fit_logistic(
                x[train],
                row_labels[train],
                x[calib],
                row_labels[calib],
                sample_weight=weight,
                calib_groups=pooled.owner[calib],
            )

        chosen_layers, fitted = fit_linear(pooled, settings.layers, fit, concept)
        names = []
        d = model.config.hidden_size
        for k, layer in enumerate(chosen_layers):
            name = f"{concept}_linear_l{layer}"
            names.append(name)
            features.append(FeatureSpec(name=name, layer=layer, activation="identity", threshold=0.0))
            directions.append(fitted.weights[k * d : (k + 1) * d])
            biases.append(fitted.bias if k == 0 else 0.0)
        # one layer: the feature's mean is the logit; several: their sum is
        probes.append(
            _probe(concept, concept, names, settings, severity, [1.0] * len(names) if len(names) > 1 else None)
        )
        if bank is None:
            continue
        assert pooled.latents is not None
        own = pooled.full[_split(examples, concept, "train")]  # whole-response means rank the latents
        ranking = rank_latents(pooled.latents[own], row_labels[own])
        chosen = [r.latent for r in ranking if r.auroc > 0.5][: settings.latents]
        if not chosen:
            raise ProbeDataError(f"concept {concept!r}: no SAE latent is more active on label 1 than on label 0")
        fitted = fit(pooled.latents[:, chosen])
        log.info("%s SAE-latent probe (%s): calib AUROC %.4f", concept, chosen, fitted.calib_auroc)
        names = []
        for latent in chosen:
            fname = f"{bank.sae_name}_{latent}"
            names.append(fname)
            if fname not in {f.name for f in features}:
                features.append(
                    FeatureSpec(
                        name=fname,
                        layer=bank.layer,
                        activation=bank.activation,
                        threshold=float(bank.threshold[latent]),
                        source="sae_latent",
                        sae=bank.sae_name,
                        latent=latent,
                    )
                )
                directions.append(bank.directions[latent])
                biases.append(float(bank.bias[latent]))
        probes.append(
            _probe(f"{concept}_sae", concept, names, settings, severity, fitted.weights.tolist(), fitted.bias)
        )
    spec = PackSpec(
        pack=pack_name,
        version=version,
        description=f"Probes for {', '.join(concepts)} made by `saemon probes train` (linear, "
        f"{'and SAE latents of ' + bank.sae_name if bank else 'no SAE'}); figures under each probe's quality.",
        model=ModelBinding(
            name=model_name, hidden_size=model.config.hidden_size, num_layers=model.config.num_hidden_layers
        ),
        weights=Path(out).with_suffix(".safetensors").name,
        features=features,
        probes=probes,
    )
    return save_pack(spec, np.stack(directions).astype(np.float32), np.array(biases, np.float32), Path(out))


def fit_linear(
    pooled: Pooled, layers: Sequence[int], fit: Callable[[np.ndarray], Fitted], concept: str = ""
) -> tuple[tuple[int, ...], Fitted]:
    """The linear probe's recipe: each candidate layer alone, then the best two together
    (one regression over both layers' means), the best on calib kept. ``fit`` fits one
    input matrix (rows of ``pooled``) on the caller's train rows and scores it on calib."""
    fits: dict[tuple[int, ...], Fitted] = {(layer,): fit(pooled.layers[layer]) for layer in layers}
    if len(layers) > 1:
        best_two = sorted(fits, key=lambda k: -fits[k].calib_auroc)[:2]
        both = tuple(sorted(key[0] for key in best_two))
        fits[both] = fit(stacked(pooled, both))
    for key, fitted in fits.items():
        log.info(
            "%s linear probe, layers %s: calib AUROC %.4f (C %g)", concept, list(key), fitted.calib_auroc, fitted.C
        )
    return max(fits.items(), key=lambda item: item[1].calib_auroc)


def stacked(pooled: Pooled, layers: Sequence[int]) -> np.ndarray:
    """The rows of several layers side by side: what a multi-layer linear probe reads."""
    return np.concatenate([pooled.layers[layer] for layer in layers], axis=1)


def _rows(pooled: Pooled, chosen: np.ndarray) -> np.ndarray:
    """The pooled rows (every sampled prefix) of the chosen examples."""
    return np.flatnonzero(np.isin(pooled.owner, chosen))


def sample_weights(examples: Sequence[Example], owner: np.ndarray, control_weight: float) -> np.ndarray:
    """Per row: each concept example weighs 1 in total over its rows; the controls share
    ``control_weight`` x the concept examples' total."""
    examples_of, rows_per = np.unique(owner, return_counts=True)
    weights = 1.0 / rows_per[np.searchsorted(examples_of, owner)]
    is_control = np.array([examples[i].concept == CONTROL for i in owner])
    if is_control.any():
        concept_total = weights[~is_control].sum()
        weights[is_control] *= control_weight * concept_total / weights[is_control].sum()
    return weights


def _probe(
    name, concept, features, settings, severity, weights: list[float] | None = None, intercept: float = 0.0
) -> ProbeSpec:
    return ProbeSpec(
        name=name,
        concept=concept,
        features=features,
        weights=weights,
        intercept=intercept,
        aggregation=settings.aggregation,
        ema_alpha=settings.ema_alpha,
        scope="response",
        threshold=0.0,
        min_tokens=settings.min_tokens,
        decide=settings.decide,
        severity=(severity or {}).get(concept, "warning"),
        action="alert",
    )
