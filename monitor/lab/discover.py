"""``saemon probes discover``: which SAE latents respond to a concept.

Every latent's mean activation over each example's response tokens (as the monitor
computes the latent, see :class:`monitor.lab.latents.LatentBank`) is compared between the
concept's label-1 and label-0 examples of the train split: AUROC (ties averaged, so a
latent that never fires scores 0.5), Cohen's d (difference of means over the pooled
standard deviation) and how often it fires on each side. The ranking is by AUROC, then
effect size; the top contexts show, for each selected latent, the response tokens where
it peaks hardest in the data, the peak as ``⟦…⟧``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from monitor.errors import ProbeDataError
from monitor.lab.datasets import Example
from monitor.lab.latents import gate_threshold, latent_bank
from monitor.lab.pooling import pool


@dataclass(frozen=True)
class LatentRank:
    latent: int
    auroc: float
    effect_size: float  # Cohen's d, label 1 minus label 0
    mean_positive: float
    mean_negative: float
    active_positive: float  # fraction of label-1 examples where it fired at all
    active_negative: float


def rank_latents(values: np.ndarray, labels: np.ndarray) -> list[LatentRank]:
    """Latents ([N, n] per-example values) ranked by AUROC then effect size, best first."""
    from scipy.stats import rankdata

    labels = np.asarray(labels)
    positive, negative = labels == 1, labels == 0
    n1, n0 = int(positive.sum()), int(negative.sum())
    if n1 == 0 or n0 == 0:
        raise ProbeDataError(f"ranking latents needs both labels; got {n1} label-1 and {n0} label-0 examples")
    ranks = rankdata(values, axis=0)
    auroc = (ranks[positive].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    mean1, mean0 = values[positive].mean(0), values[negative].mean(0)
    pooled = np.sqrt(
        (values[positive].var(0, ddof=1) * (n1 - 1) + values[negative].var(0, ddof=1) * (n0 - 1)) / max(n1 + n0 - 2, 1)
    )
    effect = np.where(pooled > 0, (mean1 - mean0) / np.where(pooled > 0, pooled, 1.0), 0.0)
    active1, active0 = (values[positive] > 0).mean(0), (values[negative] > 0).mean(0)
    order = np.lexsort((-effect, -auroc))
    return [
        LatentRank(
            int(i),
            float(auroc[i]),
            float(effect[i]),
            float(mean1[i]),
            float(mean0[i]),
            float(active1[i]),
            float(active0[i]),
        )
        for i in order
    ]


@dataclass(frozen=True)
class LatentContext:
    value: float
    text: str
    label: int
    dataset: str


def top_contexts(
    tokenizer, examples: Sequence[Example], peaks: np.ndarray, positions: np.ndarray, latent: int, count: int = 3
) -> list[LatentContext]:
    """The ``count`` examples where ``latent`` peaks hardest, as text around the peak."""
    from monitor.lab.scoring import token_view
    from monitor.sae.browse import window_text

    column = peaks[:, latent]
    contexts = []
    for i in np.argsort(-column, kind="stable")[:count]:
        if column[i] <= 0:
            break
        ids = token_view(tokenizer, examples[i]).ids
        marks = np.zeros(len(ids), np.float32)
        text = window_text(tokenizer, list(ids), marks, int(positions[i, latent]))
        contexts.append(LatentContext(float(column[i]), text, examples[i].label, examples[i].meta.get("dataset", "")))
    return contexts


def discover(
    model,
    tokenizer,
    sae,
    sae_name: str,
    examples: Sequence[Example],
    concept: str,
    top: int = 20,
    contexts: int = 3,
    limit: int | None = None,
) -> dict:
    """Rank the SAE's latents for ``concept`` on the train split; the report as a dict."""
    train = [e for e in examples if e.concept == concept and e.split == "train"]
    if limit is not None:
        train = train[:limit]
    if not train:
        raise ProbeDataError(f"no train-split examples of concept {concept!r} in the data")
    gate = gate_threshold(model, tokenizer, sae, train) if sae.activation == "topk" else None
    bank = latent_bank(sae, sae_name, gate)
    pooled = pool(model, tokenizer, train, [], bank)
    assert pooled.latents is not None and pooled.latent_peaks is not None and pooled.latent_peak_positions is not None
    ranking = rank_latents(pooled.latents[pooled.full], np.array([e.label for e in train]))
    rows = []
    for rank in ranking[:top]:
        shown = top_contexts(tokenizer, train, pooled.latent_peaks, pooled.latent_peak_positions, rank.latent, contexts)
        rows.append({**asdict(rank), "contexts": [asdict(c) for c in shown]})
    return {
        "concept": concept,
        "sae": sae_name,
        "layer": bank.layer,
        "activation": bank.activation,
        "gate_threshold": gate,
        "examples": len(train),
        "latents": rows,
    }


def format_discovery(report: dict, select: int) -> str:
    lines = [
        f"{report['concept']}: {report['examples']} train examples, SAE {report['sae']} at layer "
        f"{report['layer']} ({report['activation']}"
        + (f", gate {report['gate_threshold']:.3f}" if report["gate_threshold"] else "")
        + ")",
        f"{'latent':>7} {'AUROC':>6} {'d':>6} {'mean+':>8} {'mean-':>8} {'fires+':>7} {'fires-':>7}",
    ]
    for row in report["latents"]:
        lines.append(
            f"{row['latent']:>7} {row['auroc']:6.3f} {row['effect_size']:6.2f} {row['mean_positive']:8.3f} "
            f"{row['mean_negative']:8.3f} {row['active_positive']:7.1%} {row['active_negative']:7.1%}"
        )
        for c in row["contexts"]:
            lines.append(f"          {c['value']:7.2f} [{c['dataset']}, label {c['label']}] {c['text']}")
    chosen = [row["latent"] for row in report["latents"] if row["auroc"] > 0.5][:select]
    lines.append(f"selected ({select} best with AUROC > 0.5): {chosen}")
    return "\n".join(lines)
