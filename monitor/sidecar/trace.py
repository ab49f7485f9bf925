"""Per-token scores of one request, for the forensic view (``/ui/requests/<id>``).

While ``sidecar.ui.enabled`` is on, the scorer records for every request, pack and scope,
after each step: the step's positions, each probe's **token value** (a weighted probe's
``intercept + sum(weight x feature)``, i.e. the token's logit, whose mean is the probe's
score under ``mean``; otherwise the strongest feature) and each probe's **running score**
(what the rule compares with the threshold, as the state machine holds it after the step).
Decode steps are one token each, so their values are exact per token; a prefill chunk is
one mean value over its tokens unless the plugin sent that request's per-token prompt
rows (``plugin.prompt_token_scores``), which are kept as they are.

A trace is bounded (``sidecar.ui.trace_steps`` steps and as many exact rows per request,
pack and scope; the rest is counted, not kept) and stored with the request's report when
the request was flagged (or always, by setting). This module is pure: arrays in, a JSON
document out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monitor.probe import SCOPE_LABELS, ProbeGroup, ProbeTracks, finite

#: Significant digits kept in the stored document (scores are compared with thresholds
#: given to about 4 digits; the rest is noise that costs bytes).
DIGITS = 5


def token_values(group: ProbeGroup, features: np.ndarray) -> np.ndarray:
    """[rows, probes]: each probe's value at each row from the rows' feature values [rows, F]."""
    weighted = group.intercept[None] + features.astype(np.float64) @ np.where(group.mask, group.weights, 0.0).T
    if group.weighted.all():
        return weighted
    strongest = np.where(group.mask[None], features[:, None, :], -np.inf).max(axis=2)
    return np.where(group.weighted[None], weighted, strongest)


class Trace:
    """One request's steps for one pack and scope."""

    __slots__ = (
        "_last",
        "_rows",
        "dropped",
        "exact",
        "features",
        "fired_at",
        "group",
        "limit",
        "other",
        "pack",
        "pack_version",
        "steps",
    )

    def __init__(self, pack: str, pack_version: str, group: ProbeGroup, limit: int) -> None:
        self.pack = pack
        self.pack_version = pack_version
        self.group = group
        #: per step, a row [first position, token count, token value x P, running score x P]
        self.steps: list[np.ndarray] = []
        #: exact per-token rows (the plugin's prompt rows): position, value [P]
        self.exact: list[tuple[np.ndarray, np.ndarray]] = []
        self._rows = 0
        #: Rows of the other scope (the prompt, for response probes): first, count, value [P]
        #: under these probes' weights; no running score (these probes do not read them).
        self.other: list[tuple[int, int, np.ndarray]] = []
        #: The last position of the steps not kept (past the limit).
        self._last = -1
        self.dropped = 0
        self.fired_at: dict[int, list[int]] = {}
        self.features: list[list[dict[str, Any]]] = []
        self.limit = limit

    def add_step(self, row: np.ndarray) -> None:
        """One step: [first position, token count, token value x P, running score x P]."""
        if len(self.steps) < self.limit:
            self.steps.append(row.copy())  # a copy: a view would keep the whole batch alive
        else:
            self.dropped += int(row[1])
            self._last = int(row[0] + row[1]) - 1

    @property
    def last_position(self) -> int:
        """The last position seen (kept or not): where a probe judged at the end fired."""
        if self._last >= 0:
            return self._last
        return int(self.steps[-1][0] + self.steps[-1][1]) - 1 if self.steps else -1

    def add_other(self, first: int, count: int, features: np.ndarray) -> None:
        """A step's rows of the scope these probes do not read (a prefill chunk of the prompt
        for response probes), kept so the page can colour them too."""
        if self._rows >= self.limit:
            self.dropped += count
            return
        self.other.append((first, count, token_values(self.group, features[None])[0]))
        self._rows += 1

    def add_exact(self, positions: np.ndarray, features: np.ndarray) -> None:
        room = max(0, self.limit - self._rows)
        if len(positions) > room:
            self.dropped += len(positions) - room
            positions, features = positions[:room], features[:room]
        if len(positions):
            self.exact.append((positions.astype(np.int64), token_values(self.group, features)))
            self._rows += len(positions)

    def fired(self, probe: int, position: int) -> None:
        self.fired_at.setdefault(probe, []).append(position)

    def close(self, tracks: ProbeTracks) -> None:
        """The request ended: keep each probe's features with their final scores and share."""
        self.features = []
        for index, probe in enumerate(self.group.probes):
            weights = probe.spec.weights
            rows: list[dict[str, Any]] = []
            for k, contribution in enumerate(tracks.contributions(index)):
                weight = weights[k] if weights is not None else 1.0
                rows.append(
                    {
                        "feature": contribution.feature,
                        "layer": contribution.layer,
                        "score": _round(contribution.score),
                        "weight": _round(weight),
                        "contribution": _round(weight * contribution.score),
                        "peak_position": contribution.peak_position,
                        "peak_value": _round(contribution.peak_value),
                    }
                )
            rows.sort(key=lambda r: -abs(float(r["contribution"])))
            self.features.append(rows)

    def to_json(self) -> dict[str, Any]:
        probes = len(self.group)
        steps = np.array(self.steps).reshape(len(self.steps), 2 + 2 * probes)
        exact_positions = np.concatenate([p for p, _ in self.exact]) if self.exact else np.zeros(0, np.int64)
        exact_values = np.concatenate([v for _, v in self.exact]) if self.exact else np.zeros((0, probes))
        return {
            "pack": self.pack,
            "pack_version": self.pack_version,
            "scope": SCOPE_LABELS[self.group.scope],
            "probes": [
                {
                    "name": probe.name,
                    "concept": probe.spec.concept,
                    "threshold": probe.spec.threshold,
                    "aggregation": probe.spec.aggregation,
                    "decide": probe.spec.decide,
                    "min_tokens": probe.spec.min_tokens,
                    "layers": sorted(set(probe.feature_layers)),
                    "fired_at": self.fired_at.get(index, []),
                    "features": self.features[index] if self.features else [],
                }
                for index, probe in enumerate(self.group.probes)
            ],
            "steps": {
                "first": steps[:, 0].astype(np.int64).tolist(),
                "count": steps[:, 1].astype(np.int64).tolist(),
                "value": _rounded(steps[:, 2 : 2 + probes]),
                "score": _rounded(steps[:, 2 + probes :]),
            },
            "exact": {"positions": exact_positions.tolist(), "value": _rounded(exact_values)},
            "other": {
                "first": [first for first, _, _ in self.other],
                "count": [count for _, count, _ in self.other],
                "value": _rounded(np.array([value for _, _, value in self.other]).reshape(len(self.other), probes)),
            },
            "dropped": self.dropped,
        }


def _round(value: float) -> float:
    value = finite(float(value))
    return float(f"{value:.{DIGITS}g}")


def _rounded(array: np.ndarray) -> list[list[float]]:
    finite_array = np.where(np.isfinite(array), array, 0.0)
    return [[float(f"{v:.{DIGITS}g}") for v in row] for row in finite_array.tolist()]


def document(request_id: str, model_name: str, traces: Sequence[Trace]) -> dict[str, Any]:
    """The stored form of a request's traces (JSON-ready)."""
    return {"request_id": request_id, "model_name": model_name, "parts": [t.to_json() for t in traces]}
