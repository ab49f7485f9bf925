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
  (:mod:`monitor.probes.discover`), the best few kept, and an L2 logistic regression over
  their mean activations; the pack carries each latent's encoder row as a feature and the
  regression as the probe's ``weights`` and ``intercept``. The score is a sum of a handful
  of named latents: the interpretable explanation of an alert beside the linear probe.

By default the probes are judged on the whole response when the request ends
(``decide: end``), the quantity they are fitted on; ``decide: running`` probes are fitted
on running means at several prefix lengths instead (see :class:`TrainSettings`).

Thresholds are then calibrated on benign control conversations at the target
false-positive rate (:mod:`monitor.probes.calibrate`) and the figures measured on the test
split (:mod:`monitor.probes.evaluate`) are recorded in the pack.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from monitor.errors import ProbeDataError
from monitor.probes.datasets import CONTROL, Example
from monitor.probes.pack import FeatureSpec, ModelBinding, PackSpec, ProbePack, ProbeSpec, save_pack
from monitor.probes.scoring import residuals

log = logging.getLogger(__name__)

#: L2 strengths tried (scikit-learn's C = 1 / lambda; Apollo used 0.1 on standardised inputs).
C_GRID = (0.001, 0.01, 0.1, 1.0)
#: Tokens a response needs before a probe may fire: a mean over fewer moves too much per token.
MIN_TOKENS = 4


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


@dataclass
class Pooled:
    """Running means over each example's response tokens, at a few prefix lengths and the
    whole response: rows ``[R, d]`` per layer (SAE latents ``[R, n]``); ``owner[r]`` is the
    example of row ``r``, ``full[i]`` the row of example ``i``'s whole-response mean."""

    owner: np.ndarray
    full: np.ndarray
    layers: dict[int, np.ndarray] = field(default_factory=dict)
    latents: np.ndarray | None = None
    latent_peaks: np.ndarray | None = None  # [N, n] max over the response tokens
    latent_peak_positions: np.ndarray | None = None  # [N, n] absolute position of that max


def prefix_lengths(n: int, min_tokens: int, prefixes: int) -> list[int]:
    """The running-mean lengths sampled for an ``n``-token response: up to ``prefixes``
    evenly spaced from ``min_tokens`` (where the monitor may first fire), always ``n``."""
    if prefixes <= 0 or n <= min_tokens:
        return [n]
    return sorted({int(round(v)) for v in np.linspace(min_tokens, n, prefixes)} | {n})


def pool(model, tokenizer, examples: Sequence[Example], layers: Sequence[int], latents=None,
         prefixes: int = 0, min_tokens: int = MIN_TOKENS) -> Pooled:  # fmt: skip
    """Running means at ``layers`` and, with ``latents`` (a :class:`LatentBank`), the
    latents' running means, peaks and peak positions at the SAE's layer, in one forward pass."""
    wanted = set(layers) | ({latents.layer} if latents is not None else set())
    n = len(examples)
    rows: dict[int, list[np.ndarray]] = {layer: [None] * n for layer in layers}  # type: ignore[list-item]
    latent_rows: list = [None] * n
    owners: list = [None] * n
    peaks = np.zeros((n, latents.size), np.float32) if latents is not None else None
    peak_positions = np.zeros((n, latents.size), np.int32) if latents is not None else None
    for item in residuals(model, tokenizer, examples, sorted(wanted)):
        count = len(item.positions["response"])
        if not count:
            raise ProbeDataError(f"example {item.index} has no response tokens to score (empty final turn?)")
        ends = torch.tensor(prefix_lengths(count, min_tokens, prefixes)) - 1

        def running(values: torch.Tensor) -> np.ndarray:
            return (values.cumsum(0)[ends] / (ends + 1).unsqueeze(1)).numpy()

        for layer in layers:
            rows[layer][item.index] = running(item.rows[("response", layer)])
        if latents is not None:
            z = latents.values(item.rows[("response", latents.layer)])
            latent_rows[item.index] = running(z)
            peak, where = z.max(0)
            peaks[item.index] = peak.numpy()
            peak_positions[item.index] = item.positions["response"][where.numpy()]
        owners[item.index] = np.full(len(ends), item.index)
    owner = np.concatenate(owners)
    full = np.flatnonzero(np.r_[owner[1:] != owner[:-1], True])  # the last row of each example
    return Pooled(
        owner=owner,
        full=full,
        layers={layer: np.concatenate(rows[layer]).astype(np.float32) for layer in layers},
        latents=np.concatenate(latent_rows).astype(np.float32) if latents is not None else None,
        latent_peaks=peaks,
        latent_peak_positions=peak_positions,
    )


@dataclass(frozen=True)
class Fitted:
    """A logistic regression folded back to raw inputs: logit = inputs . weights + bias."""

    weights: np.ndarray
    bias: float
    C: float
    calib_auroc: float


def fit_logistic(x_train, y_train, x_calib, y_calib, grid: Sequence[float] = C_GRID, sample_weight=None,
                 calib_groups: np.ndarray | None = None) -> Fitted:  # fmt: skip
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


@dataclass(frozen=True)
class LatentBank:
    """SAE latents as the monitor computes them: ``act(x . W_enc[:, i] + b_i)`` per latent.

    ReLU and JumpReLU SAEs are exact this way. A TopK latent is only non-zero among its
    token's k largest, which needs the full encode; the pack uses the standard inference
    conversion instead (as for BatchTopK): JumpReLU with one threshold, the median k-th
    largest pre-activation on the data (:func:`gate_threshold`)."""

    layer: int
    directions: np.ndarray  # [n, d]
    bias: np.ndarray  # [n]
    activation: str  # relu | jumprelu
    threshold: np.ndarray  # [n]
    sae_name: str

    @property
    def size(self) -> int:
        return self.directions.shape[0]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() @ torch.from_numpy(self.directions).T + torch.from_numpy(self.bias)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        if self.activation == "relu":
            return pre.clamp_min(0.0)
        return torch.where(pre > torch.from_numpy(self.threshold), pre, 0.0)


def latent_bank(sae, name: str, gate: float | None = None) -> LatentBank:
    """The SAE's latents as pack features (affine encoder rows); refuses what the monitor's
    per-latent projection cannot express."""
    from monitor.errors import SaeError

    if sae.layer is None:
        raise SaeError(f"{sae.source}: the SAE does not say which layer it reads; it cannot become pack features")
    if sae.normalisation not in ("none", "scale"):
        raise SaeError(
            f"{sae.source}: input normalisation {sae.normalisation!r} depends on each token's norm, which the "
            "monitor's per-latent projection does not compute; use an SAE without it (or with a fixed scale)"
        )
    if sae.activation == "gated":
        raise SaeError(f"{sae.source}: gated SAEs cannot be expressed as pack features (gate and magnitude differ)")
    W = sae.W_enc.float() * (sae.input_scale if sae.normalisation == "scale" else 1.0)  # [d, n]
    bias = sae.b_enc.float() - (sae.b_dec.float() @ sae.W_enc.float() if sae.subtract_b_dec else 0.0)
    directions = W.T.contiguous().numpy()
    if sae.activation == "relu":
        return LatentBank(sae.layer, directions, bias.numpy(), "relu", np.zeros(sae.d_sae, np.float32), name)
    if sae.activation == "jumprelu":
        return LatentBank(sae.layer, directions, bias.numpy(), "jumprelu", sae.threshold.float().numpy(), name)
    if gate is None:
        raise ProbeDataError("a TopK SAE needs its gate threshold (gate_threshold) to become pack features")
    return LatentBank(sae.layer, directions, bias.numpy(), "jumprelu", np.full(sae.d_sae, gate, np.float32), name)


def gate_threshold(model, tokenizer, sae, examples: Sequence[Example], limit: int = 400) -> float:
    """For a TopK SAE: the median over response tokens of the k-th largest pre-activation,
    the one threshold that keeps about k latents per token."""
    bank = latent_bank(sae, "gate", gate=0.0)
    sample = list(examples[:: max(1, len(examples) // limit)][:limit])  # spread over every concept
    kth = []
    for item in residuals(model, tokenizer, sample, [bank.layer]):
        pre = bank.pre_activations(item.rows[("response", bank.layer)])
        kth.append(pre.topk(sae.k, dim=1).values[:, -1])
    return float(torch.cat(kth).median().clamp_min(0.0))


def _split(examples: Sequence[Example], concept: str, split: str, with_controls: bool = False) -> np.ndarray:
    return np.array([
        i for i, e in enumerate(examples)
        if e.split == split and (e.concept == concept or (with_controls and e.concept == CONTROL))
    ], dtype=np.int64)  # fmt: skip


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
    from monitor.probes.discover import rank_latents

    # only what fitting reads: the concepts' train and calib splits, the train controls
    examples = [
        e for e in examples
        if (e.concept in concepts and e.split in ("train", "calib"))
        or (settings.with_controls and e.concept == CONTROL and e.split == "train")
    ]  # fmt: skip
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
    log.info("pooling %d examples at layers %s%s", len(examples), list(settings.layers),
             f" and {bank.size} SAE latents at layer {bank.layer}" if bank else "")  # fmt: skip
    prefixes = settings.prefixes if settings.decide == "running" else 0
    pooled = pool(model, tokenizer, examples, settings.layers, bank, prefixes, settings.min_tokens)
    row_labels = labels[pooled.owner]

    features: list[FeatureSpec] = []
    probes: list[ProbeSpec] = []
    directions, biases = [], []
    for concept in concepts:
        train = _rows(pooled, _split(examples, concept, "train", settings.with_controls))
        calib = _rows(pooled, _split(examples, concept, "calib"))
        weight = _weights(examples, pooled.owner[train], settings.control_weight)

        def fit(x: np.ndarray) -> Fitted:
            return fit_logistic(x[train], row_labels[train], x[calib], row_labels[calib], sample_weight=weight,
                                calib_groups=pooled.owner[calib])  # fmt: skip

        fits = {(layer,): fit(pooled.layers[layer]) for layer in settings.layers}
        if len(settings.layers) > 1:
            best_two = sorted(fits, key=lambda k: -fits[k].calib_auroc)[:2]
            both = tuple(sorted(key[0] for key in best_two))
            fits[both] = fit(np.concatenate([pooled.layers[layer] for layer in both], axis=1))
        for key, fitted in fits.items():
            log.info("%s linear probe, layers %s: calib AUROC %.4f (C %g)", concept, list(key), fitted.calib_auroc, fitted.C)
        chosen_layers, fitted = max(fits.items(), key=lambda item: item[1].calib_auroc)
        names = []
        d = model.config.hidden_size
        for k, layer in enumerate(chosen_layers):
            name = f"{concept}_linear_l{layer}"
            names.append(name)
            features.append(FeatureSpec(name=name, layer=layer, activation="identity", threshold=0.0))
            directions.append(fitted.weights[k * d : (k + 1) * d])
            biases.append(fitted.bias if k == 0 else 0.0)
        # one layer: the feature's mean is the logit; several: their sum is
        probes.append(_probe(concept, concept, names, settings, severity, [1.0] * len(names) if len(names) > 1 else None))
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
                features.append(FeatureSpec(
                    name=fname, layer=bank.layer, activation=bank.activation, threshold=float(bank.threshold[latent]),
                    source="sae_latent", sae=bank.sae_name, latent=latent,
                ))  # fmt: skip
                directions.append(bank.directions[latent])
                biases.append(float(bank.bias[latent]))
        probes.append(_probe(f"{concept}_sae", concept, names, settings, severity, fitted.weights.tolist(), fitted.bias))
    spec = PackSpec(
        pack=pack_name,
        version=version,
        description=f"Probes for {', '.join(concepts)} made by `saemon probes train` (linear, "
        f"{'and SAE latents of ' + bank.sae_name if bank else 'no SAE'}); figures under each probe's quality.",
        model=ModelBinding(name=model_name, hidden_size=model.config.hidden_size,
                           num_layers=model.config.num_hidden_layers),  # fmt: skip
        weights=Path(out).with_suffix(".safetensors").name,
        features=features,
        probes=probes,
    )
    return save_pack(spec, np.stack(directions).astype(np.float32), np.array(biases, np.float32), Path(out))


def _rows(pooled: Pooled, chosen: np.ndarray) -> np.ndarray:
    """The pooled rows (every sampled prefix) of the chosen examples."""
    return np.flatnonzero(np.isin(pooled.owner, chosen))


def _weights(examples: Sequence[Example], owner: np.ndarray, control_weight: float) -> np.ndarray:
    """Per row: each concept example weighs 1 in total over its rows; the controls share
    ``control_weight`` x the concept examples' total."""
    examples_of, rows_per = np.unique(owner, return_counts=True)
    weights = 1.0 / rows_per[np.searchsorted(examples_of, owner)]
    is_control = np.array([examples[i].concept == CONTROL for i in owner])
    if is_control.any():
        concept_total = weights[~is_control].sum()
        weights[is_control] *= control_weight * concept_total / weights[is_control].sum()
    return weights


def _probe(name, concept, features, settings, severity, weights: list[float] | None = None,
           intercept: float = 0.0) -> ProbeSpec:  # fmt: skip
    return ProbeSpec(
        name=name,
        concept=concept,
        features=features,
        weights=weights,
        intercept=intercept,
        aggregation="mean",
        scope="response",
        threshold=0.0,
        min_tokens=settings.min_tokens,
        decide=settings.decide,
        severity=(severity or {}).get(concept, "warning"),
        action="alert",
    )
