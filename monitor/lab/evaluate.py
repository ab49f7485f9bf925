"""``saemon probes eval``: detection quality of a pack, measured the way the monitor decides.

For every probe: its concept's examples of the chosen split (label 1 against label 0) and
the benign controls, scored through the monitor's code (:mod:`monitor.lab.scoring`).
Reported: AUROC (concept examples), recall (label-1 examples the rule fires on at the
pack's threshold), the false-positive rate on held-out controls (what ``target_fpr``
promised) and on the concept's own label-0 examples (honest answers, secure code: the hard
negatives), and AUROC per source dataset. ``--record`` writes these into the pack's YAML;
the tests re-run the evaluation and compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from monitor.errors import ProbeDataError
from monitor.lab.datasets import CONTROL, Example
from monitor.pack import ProbePack, QualitySpec, save_pack


@dataclass(frozen=True)
class ProbeQuality:
    probe: str
    concept: str
    threshold: float
    target_fpr: float | None
    positives: int
    negatives: int
    controls: int
    auroc: float | None
    recall: float | None
    negative_fpr: float | None
    control_fpr: float | None
    by_dataset: dict[str, float]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (scikit-learn); -inf scores (never eligible to fire) rank lowest."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if len(set(labels.tolist())) < 2:
        return None
    finite = scores[np.isfinite(scores)]
    floor = (finite.min() - 1.0) if finite.size else 0.0
    return float(roc_auc_score(labels, np.where(np.isfinite(scores), scores, floor)))


def evaluate(model, tokenizer, pack: ProbePack, examples: Sequence[Example], split: str = "test") -> list[ProbeQuality]:
    from monitor.lab.scoring import score_examples

    concepts = {p.concept for p in pack.spec.probes}
    chosen = [e for e in examples if e.split == split and (e.concept in concepts or e.concept == CONTROL)]
    missing = sorted(c for c in concepts if not any(e.concept == c for e in chosen))
    if missing:
        raise ProbeDataError(
            f"the data has no {split}-split examples of {', '.join(map(repr, missing))}, which pack "
            f"{pack.name} probes; pass that concept's JSONL with --data"
        )
    results = score_examples(model, tokenizer, pack, chosen)
    report = []
    for spec in pack.spec.probes:
        own = [i for i, e in enumerate(chosen) if e.concept == spec.concept]
        controls = [i for i, e in enumerate(chosen) if e.concept == CONTROL]
        labels = np.array([chosen[i].label for i in own])
        scores = np.array([results[i][spec.name].score for i in own])
        fired = np.array([results[i][spec.name].fired for i in own])
        control_fired = np.array([results[i][spec.name].fired for i in controls], dtype=bool)
        datasets = sorted({chosen[i].meta.get("dataset", "") for i in own} - {""})
        by_dataset = {}
        for name in datasets:
            mask = np.array([chosen[i].meta.get("dataset") == name for i in own])
            value = auroc(labels[mask], scores[mask])
            if value is not None:
                by_dataset[name] = value
        positives, negatives = labels == 1, labels == 0
        report.append(
            ProbeQuality(
                probe=spec.name,
                concept=spec.concept,
                threshold=spec.threshold,
                target_fpr=spec.target_fpr,
                positives=int(positives.sum()),
                negatives=int(negatives.sum()),
                controls=len(controls),
                auroc=auroc(labels, scores),
                recall=float(fired[positives].mean()) if positives.any() else None,
                negative_fpr=float(fired[negatives].mean()) if negatives.any() else None,
                control_fpr=float(control_fired.mean()) if controls else None,
                by_dataset=by_dataset,
            )
        )
    return report


def record(pack: ProbePack, report: Sequence[ProbeQuality], split: str, data: dict[str, str]) -> ProbePack:
    """Write the measured figures into each probe's ``quality``; ``data`` maps each data
    file's name to its sha256."""
    by_probe = {q.probe: q for q in report}
    probes = []
    for spec in pack.spec.probes:
        q = by_probe[spec.name]
        quality = QualitySpec(
            auroc=_round(q.auroc),
            recall_at_threshold=_round(q.recall),
            fpr_at_threshold=_round(q.control_fpr),
            negative_fpr_at_threshold=_round(q.negative_fpr),
            dataset=", ".join(sorted(data)),
            split=split,
            examples=q.positives + q.negatives,
            controls=q.controls,
            by_dataset={k: _round(v) for k, v in q.by_dataset.items()} or None,
            data_sha256=dict(sorted(data.items())),
            held_out=spec.quality.held_out if spec.quality else None,  # --held-out --record's, kept
        )
        probes.append(spec.model_copy(update={"quality": quality}))
    assert pack.directions is not None and pack.bias is not None
    return save_pack(pack.spec.model_copy(update={"probes": probes}), pack.directions, pack.bias, pack.path)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_report(report: Sequence[ProbeQuality]) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        f"{'probe':<22} {'concept':<14} {'AUROC':>6} {'recall':>7} {'FPR ctl':>8} {'FPR neg':>8} "
        f"{'target':>7} {'threshold':>10} {'pos/neg/ctl':>13}"
    ]
    for q in report:
        counts = f"{q.positives}/{q.negatives}/{q.controls}"
        lines.append(
            f"{q.probe:<22} {q.concept:<14} {q.auroc or 0:6.3f} {pct(q.recall):>7} {pct(q.control_fpr):>8} "
            f"{pct(q.negative_fpr):>8} {pct(q.target_fpr):>7} {q.threshold:10.4f} {counts:>13}"
        )
        if q.by_dataset:
            lines.append("    AUROC by dataset: " + ", ".join(f"{k} {v:.3f}" for k, v in q.by_dataset.items()))
    return "\n".join(lines)


def to_json(report: Sequence[ProbeQuality]) -> list[dict]:
    return [asdict(q) for q in report]
