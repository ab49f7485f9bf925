"""``saemon probes eval --streaming``: how early could each probe decide, and how well?

Acting on a probe before the answer is finished (stopping it, steering the model) needs a
probe that decides while the response streams. For every probe of a pack, the split's
examples of its concept and the held-out controls are scored through the monitor's code
(:mod:`monitor.lab.scoring`) with the probe's running score traced after each response
token. Deciding mid-stream, a probe fires at the first token ``t >= min_tokens`` where its
running score crosses the threshold; so:

- the threshold at ``fpr`` is the one that lets ``fpr`` of the held-out controls cross at
  any point of their response (what on-call would see from benign traffic);
- recall after ``t`` tokens is the share of the concept's label-1 examples whose running
  score crossed within their first ``t`` tokens (a shorter response counts whole);
- AUROC after ``t`` tokens ranks label 1 against label 0 by the highest running score so far.

Each figure has a 95% bootstrap interval (:func:`monitor.lab.ood.bootstrap`, the same
resamples at every ``t``). The pack's own ``decide: end`` probes are measured as if they
decided mid-stream: that is the question this answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from monitor.errors import ProbeDataError
from monitor.lab.datasets import CONTROL, Example
from monitor.lab.ood import RESAMPLES, Interval, bootstrap, check_rate
from monitor.pack import ProbePack

#: Tokens seen at which the figures are reported (and at the end of the response).
TOKENS = (4, 8, 16, 32, 64)


@dataclass(frozen=True)
class StreamingPoint:
    tokens: int | None  # None: the whole response
    auroc: Interval
    recall: Interval


@dataclass(frozen=True)
class StreamingQuality:
    probe: str
    concept: str
    min_tokens: int
    fpr: float
    positives: int
    negatives: int
    controls: int
    points: list[StreamingPoint]


def best_so_far(running: Sequence[float], min_tokens: int, tokens: int | None) -> float:
    """The highest running score from ``min_tokens`` up to ``tokens`` tokens (all: None);
    -inf when the response is shorter than ``min_tokens``."""
    values = np.asarray(running, dtype=np.float64)
    end = len(values) if tokens is None else min(tokens, len(values))
    window = values[max(min_tokens, 1) - 1 : end]
    return float(window.max()) if window.size else float("-inf")


def streaming_quality(
    model,
    tokenizer,
    pack: ProbePack,
    examples: Sequence[Example],
    *,
    split: str = "test",
    fpr: float = 0.01,
    tokens: Sequence[int] = TOKENS,
    resamples: int = RESAMPLES,
) -> list[StreamingQuality]:
    from monitor.lab.scoring import score_examples

    check_rate(fpr)
    concepts = {p.concept for p in pack.spec.probes}
    chosen = [e for e in examples if e.split == split and (e.concept in concepts or e.concept == CONTROL)]
    if not any(e.concept == CONTROL for e in chosen):
        raise ProbeDataError(f"no {split}-split control examples: pass the controls' JSONL (control.jsonl) with --data")
    results = score_examples(model, tokenizer, pack, chosen, trace=True)
    report = []
    for spec in pack.spec.probes:
        if spec.scope != "response":
            continue  # prompt probes judge the prompt, which is whole before the answer starts
        own = [i for i, e in enumerate(chosen) if e.concept == spec.concept]
        controls = [i for i, e in enumerate(chosen) if e.concept == CONTROL]
        if not own:
            continue

        def best(indices: list[int], t: int | None, name: str = spec.name, min_tokens: int = spec.min_tokens):
            return np.array([best_so_far(results[i][name].running or (), min_tokens, t) for i in indices])

        label = np.array([chosen[i].label for i in own])
        positives = [i for i, y in zip(own, label, strict=True) if y == 1]
        negatives = [i for i, y in zip(own, label, strict=True) if y == 0]
        # -inf (shorter than min_tokens: never eligible) ranks below every score and never fires
        control_best = best(controls, None)
        points = []
        for t in (*tokens, None):
            area, recall = bootstrap(best(positives, t), best(negatives, t), control_best, fpr, resamples, seed=0)
            points.append(StreamingPoint(t, area, recall))
        report.append(
            StreamingQuality(
                spec.name, spec.concept, spec.min_tokens, fpr, len(positives), len(negatives), len(controls), points
            )
        )
    return report


def format_streaming(report: Sequence[StreamingQuality]) -> str:
    if not report:
        return "no response-scope probe with examples of its concept"
    fpr = f"{report[0].fpr:.0%}" if report[0].fpr >= 0.01 else f"{report[0].fpr:g}"
    lines = [
        f"deciding while the response streams: recall at {fpr} FPR (held-out controls crossing at any "
        "token) and AUROC, after t response tokens; 95% bootstrap intervals"
    ]
    for q in report:
        lines.append("")
        lines.append(
            f"{q.probe} ({q.concept}, min_tokens {q.min_tokens}, {q.positives}/{q.negatives}/{q.controls} pos/neg/ctl)"
        )
        lines.append(f"  {'tokens':>6}  {'recall@' + fpr:<24} {'AUROC':<24}")
        for point in q.points:
            seen = "all" if point.tokens is None else str(point.tokens)
            lines.append(f"  {seen:>6}  {point.recall!s:<24} {point.auroc!s:<24}")
    return "\n".join(lines)


def to_json(report: Sequence[StreamingQuality]) -> list[dict]:
    return [asdict(q) for q in report]
