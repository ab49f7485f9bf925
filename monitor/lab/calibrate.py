"""``saemon probes calibrate``: thresholds at a stated false-positive rate on benign data.

Each probe's threshold is set on the calib split of benign control conversations, scored
exactly as the monitor scores (:mod:`monitor.lab.scoring`): at most ``fpr`` of them
would fire. The threshold sits halfway between the lowest score still allowed to fire and
the highest that must not, so a rounding difference cannot flip a decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import ProbeDataError
from monitor.lab.datasets import CONTROL, Example
from monitor.pack import ProbePack, save_pack

DEFAULT_FPR = 0.01


def threshold_at_fpr(scores: np.ndarray, fpr: float) -> float:
    """A threshold that flags (score >= threshold) at most ``floor(fpr * n)`` of ``scores``
    (-inf: never eligible, never flagged), as many as ties allow."""
    if not 0 < fpr < 1:
        raise ProbeDataError(f"the false-positive rate must be in (0, 1), got {fpr}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ProbeDataError("calibration needs control examples; none were given")
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    allowed = math.floor(fpr * scores.size + 1e-9)
    if finite.size == 0:
        return 0.0
    if allowed >= finite.size:
        return float(finite[-1])
    # back off through ties: the allowed-th and next scores must differ
    while allowed > 0 and finite[allowed - 1] == finite[allowed]:
        allowed -= 1
    if allowed == 0:
        top = finite[0]
        return float(top + max(1e-6, abs(top) * 1e-6))
    return float((finite[allowed - 1] + finite[allowed]) / 2)


@dataclass(frozen=True)
class Calibration:
    probe: str
    threshold: float
    controls: int
    flagged: int

    @property
    def fpr(self) -> float:
        return self.flagged / self.controls if self.controls else 0.0


def calibrate(
    model,
    tokenizer,
    pack: ProbePack,
    examples: Sequence[Example],
    fpr: float = DEFAULT_FPR,
    split: str = "calib",
    out: Path | None = None,
) -> tuple[ProbePack, list[Calibration]]:
    """Set every probe's threshold on the ``split`` controls; write the pack (to ``out`` or
    in place) and return it with what each probe flags at its new threshold."""
    from monitor.lab.scoring import score_examples

    controls = [e for e in examples if e.concept == CONTROL and e.split == split]
    if not controls:
        raise ProbeDataError(
            f"no {split}-split control examples (concept {CONTROL!r}) to calibrate on; pass the control "
            "dataset from `saemon probes generate` (control.jsonl) with --data"
        )
    results = score_examples(model, tokenizer, pack, controls)
    probes, report = [], []
    for probe in pack.spec.probes:
        scores = np.array([r[probe.name].score for r in results])
        threshold = threshold_at_fpr(scores, fpr)
        flagged = int((scores >= threshold).sum())
        report.append(Calibration(probe.name, threshold, len(controls), flagged))
        probes.append(probe.model_copy(update={"threshold": threshold, "target_fpr": fpr}))
    spec = pack.spec.model_copy(update={"probes": probes})
    assert pack.directions is not None and pack.bias is not None
    return save_pack(spec, pack.directions, pack.bias, Path(out or pack.path)), report


def format_calibration(report: Sequence[Calibration], fpr: float) -> str:
    lines = [f"{'probe':<24} {'threshold':>10} {'controls':>9} {'flagged':>8} {'FPR':>7}  (target {fpr:.2%})"]
    lines += [f"{c.probe:<24} {c.threshold:10.4f} {c.controls:9d} {c.flagged:8d} {c.fpr:7.2%}" for c in report]
    return "\n".join(lines)
