"""A pack's probes on one request: scores folded from step summaries, and when each fires.

This module owns the rule. The sidecar runs it on live traffic
(:mod:`monitor.sidecar.scorer`) and the offline evaluator runs it on teacher-forced
examples (:mod:`monitor.lab.scoring`), so a threshold calibrated offline is the one the
monitor applies. It is pure: no I/O, no clocks, no metrics; the caller turns transitions
into decisions.

Input, per step, for one request and scope: each pack feature's max over the step's rows,
the position of that max, the sum, and the count of rows above the feature's token
threshold (the projection's summaries, as the wire contract carries them). A feature's
score over the request folds those with the probe's aggregation:

- ``max``: the strongest token (exact).
- ``mean``: sum / tokens over the scope (exact).
- ``ema``: exponential moving average over tokens. Exact for decode steps (one token each);
  a prefill chunk of n tokens with mean m is folded as n tokens of value m, i.e.
  ``ema <- ema * (1-a)^n + m * (1 - (1-a)^n)``.
- ``window_count``: tokens above the feature threshold among the last ``window_tokens``.
  Exact for decode; a chunk's count is attributed to its last position.

A probe scores the max over its features, or with ``weights``
``intercept + sum(weight x feature score)`` (a logistic-regression probe; for ``mean`` this
is exactly the regression's logit on the mean activations).

The rule, per probe:

- ``decide: running``: a quiet probe fires when its scope has at least ``min_tokens``
  tokens and the score reaches the threshold; a firing probe resolves when the score falls
  below ``threshold - hysteresis`` (so a score hovering at the threshold does not flap).
- ``decide: end``: judged once, on the final score, when the request ends.
- When the request ends every firing probe resolves; an evicted request (never finished)
  resolves what is firing without judging the ``end`` probes.

:attr:`ProbeTracks.judged` is the score the rule compares with the threshold (the final
score for ``end``, the highest running score once ``min_tokens`` were in scope for
``running``): a probe fired on a request exactly when ``judged >= threshold``, which is what
calibration relies on.

The state of all of a pack's probes of one scope on one request is a few arrays over the
pack's features (:class:`ProbeTracks`), so a step costs a fixed handful of array operations
whatever the number of features and probes.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from monitor.pack import ProbePack, ProbeSpec
from monitor.proto.saemon.v1 import monitor_pb2 as pb

SCOPES: dict[str, pb.TokenScope] = {"prompt": pb.TOKEN_SCOPE_PROMPT, "response": pb.TOKEN_SCOPE_RESPONSE}
SCOPE_LABELS: dict[int, str] = {pb.TOKEN_SCOPE_PROMPT: "prompt", pb.TOKEN_SCOPE_RESPONSE: "response"}
SEVERITIES: dict[str, pb.Severity] = {
    "info": pb.SEVERITY_INFO,
    "warning": pb.SEVERITY_WARNING,
    "critical": pb.SEVERITY_CRITICAL,
}
ACTIONS: dict[str, pb.Action] = {"alert": pb.ACTION_ALERT, "record": pb.ACTION_RECORD}
FIRED = pb.DECISION_KIND_FIRED
RESOLVED = pb.DECISION_KIND_RESOLVED
#: Strongest tokens kept per probe and request for the report (the forensic pointers).
TOP_TOKENS = 5


@dataclass(frozen=True, slots=True)
class Step:
    """One step's rows of one request and scope, per pack feature (arrays of length F)."""

    first_position: int
    num_tokens: int
    max: np.ndarray  # float: the feature's largest activation among the rows
    argmax: np.ndarray  # int64: absolute position of that row
    sum: np.ndarray  # float: sum over the rows
    count: np.ndarray  # int: rows above the feature's token threshold


class Transition(NamedTuple):
    """A probe changed state: ``probe`` (its index in the group), ``kind`` FIRED or RESOLVED,
    and for a firing whether it is the first on this request (what counts a request as flagged)."""

    probe: int
    kind: pb.DecisionKind
    first: bool = False


@dataclass(frozen=True)
class CompiledProbe:
    """A probe spec resolved against its pack: feature indices, enums, provenance."""

    spec: ProbeSpec
    pack: str
    pack_version: str
    feature_indices: tuple[int, ...]
    feature_names: tuple[str, ...]
    feature_layers: tuple[int, ...]
    feature_thresholds: tuple[float, ...]
    scope: pb.TokenScope
    severity: pb.Severity
    action: pb.Action

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_pack(cls, pack: ProbePack, spec: ProbeSpec) -> CompiledProbe:
        index = pack.feature_index
        features = [pack.spec.features[index[name]] for name in spec.features]
        return cls(
            spec=spec,
            pack=pack.name,
            pack_version=pack.version,
            feature_indices=tuple(index[name] for name in spec.features),
            feature_names=tuple(spec.features),
            feature_layers=tuple(f.layer for f in features),
            feature_thresholds=tuple(f.threshold for f in features),
            scope=SCOPES[spec.scope],
            severity=SEVERITIES[spec.severity],
            action=ACTIONS[spec.action],
        )


class ProbeGroup:
    """The probes of one pack that read one scope, compiled to arrays over the pack's features.

    Shared by every request; a :class:`ProbeTracks` holds one request's state against it.
    """

    def __init__(self, probes: Sequence[CompiledProbe], num_features: int, feature_names: Sequence[str]) -> None:
        self.probes = tuple(probes)
        self.scope = self.probes[0].scope
        self.num_features = num_features
        self.feature_names = tuple(feature_names)
        count = len(self.probes)
        self.mask = np.zeros((count, num_features), dtype=bool)
        self.weights = np.zeros((count, num_features))
        self.weighted = np.zeros(count, dtype=bool)
        #: Per probe and feature, what a step's max is multiplied by to rank its strongest
        #: tokens: the weight for weighted probes, 1 otherwise (0 outside the probe).
        self.top_scale = np.zeros((count, num_features))
        self.intercept = np.zeros(count)
        self.threshold = np.array([p.spec.threshold for p in self.probes], dtype=float)
        self.floor = np.array([p.spec.threshold - p.spec.hysteresis for p in self.probes], dtype=float)
        self.min_tokens = np.array([p.spec.min_tokens for p in self.probes], dtype=np.int64)
        self.running = np.array([p.spec.decide == "running" for p in self.probes], dtype=bool)
        self.any_running = bool(self.running.any())
        for row, probe in enumerate(self.probes):
            columns = list(probe.feature_indices)
            self.mask[row, columns] = True
            if probe.spec.weights is not None:
                self.weighted[row] = True
                self.weights[row, columns] = probe.spec.weights
                self.top_scale[row, columns] = probe.spec.weights
                self.intercept[row] = probe.spec.intercept
            else:
                self.top_scale[row, columns] = 1.0
        kinds = [p.spec.aggregation for p in self.probes]
        self.by_kind = {
            kind: np.array([i for i, k in enumerate(kinds) if k == kind], dtype=np.int64) for kind in set(kinds)
        }
        ema = self.by_kind.get("ema")
        self.ema_keep = None if ema is None else np.array([1.0 - self.probes[i].spec.ema_alpha for i in ema])[:, None]
        self.windows = tuple(self.probes[i].spec.window_tokens for i in self.by_kind.get("window_count", ()))
        self._rows = np.arange(count)

    def __len__(self) -> int:
        return len(self.probes)


class ProbeTracks:
    """All of one :class:`ProbeGroup`'s probes on one request: aggregates, scores, firing state."""

    __slots__ = (
        "_fresh",
        "_score",
        "best",
        "ema",
        "fired",
        "firing",
        "group",
        "peak",
        "peak_position",
        "tokens",
        "top",
        "total",
        "window",
        "window_sum",
    )

    def __init__(self, group: ProbeGroup) -> None:
        self.group = group
        count, features = len(group), group.num_features
        self.tokens = 0
        self.peak = np.full(features, -np.inf)
        self.peak_position = np.full(features, -1, dtype=np.int64)
        self.total = np.zeros(features)
        ema = group.by_kind.get("ema")
        self.ema = None if ema is None else np.zeros((len(ema), features))
        windows = group.windows
        self.window: list[deque[tuple[int, np.ndarray]]] | None = [deque() for _ in windows] if windows else None
        self.window_sum = np.zeros((len(windows), features), dtype=np.int64) if windows else None
        self.firing = np.zeros(count, dtype=bool)
        self.fired = np.zeros(count, dtype=bool)
        #: The highest score once min_tokens were in scope (running probes' judged score).
        self.best = np.full(count, -np.inf)
        #: Per probe a min-heap of (value, position, feature index): the strongest step
        #: maxima. A decode step is one token, so these are exact token peaks.
        self.top: list[list[tuple[float, int, int]]] = [[] for _ in range(count)]
        self._score = np.full(count, -np.inf)
        self._fresh = True

    # -- folding -------------------------------------------------------------------------

    def observe(self, step: Step) -> list[Transition]:
        """Fold one step in; the transitions the rule calls for, if any."""
        group = self.group
        n = step.num_tokens
        first = self.tokens == 0
        self.tokens += n
        better = step.max > self.peak
        if better.any():
            np.copyto(self.peak, step.max, where=better)
            np.copyto(self.peak_position, step.argmax, where=better)
        self.total += step.sum
        ema, keep = self.ema, group.ema_keep
        if ema is not None and keep is not None:
            mean = step.sum / n
            if first:
                ema[:] = mean
            else:
                decay = keep**n
                ema *= decay
                ema += mean * (1.0 - decay)
        window, window_sum = self.window, self.window_sum
        if window is not None and window_sum is not None:
            last = step.first_position + n - 1
            for i, (entries, length) in enumerate(zip(window, group.windows, strict=True)):
                entries.append((last, step.count))
                window_sum[i] += step.count
                horizon = last - length
                while entries and entries[0][0] <= horizon:
                    window_sum[i] -= entries.popleft()[1]
        self._push_top(step)
        self._fresh = False
        if not group.any_running:
            return []
        return self._judge_running()

    def _push_top(self, step: Step) -> None:
        values = np.where(self.group.mask, self.group.top_scale * step.max, -np.inf)
        features = values.argmax(axis=1)
        peaks = values[self.group._rows, features]
        positions = step.argmax[features]
        for heap, value, position, feature in zip(
            self.top, peaks.tolist(), positions.tolist(), features.tolist(), strict=True
        ):
            entry = (value, position, feature)
            if len(heap) < TOP_TOKENS:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)

    def _judge_running(self) -> list[Transition]:
        group = self.group
        score = self.scores()
        eligible = group.running & (self.tokens >= group.min_tokens)
        np.maximum(self.best, score, out=self.best, where=eligible)
        fire = eligible & ~self.firing & (score >= group.threshold)
        resolve = group.running & self.firing & (score < group.floor)
        if not (fire.any() or resolve.any()):
            return []
        self.firing &= ~resolve
        return self._fire(fire) + [Transition(int(i), RESOLVED) for i in np.flatnonzero(resolve)]

    def _fire(self, fire: np.ndarray) -> list[Transition]:
        transitions = [Transition(int(i), FIRED, not self.fired[i]) for i in np.flatnonzero(fire)]
        self.firing |= fire
        self.fired |= fire
        return transitions

    def close(self, *, judge: bool = True) -> list[Transition]:
        """The request ended (``judge``) or was evicted: judge the ``end`` probes, then
        resolve every firing probe. Transitions in order, as from :meth:`observe`."""
        group = self.group
        transitions: list[Transition] = []
        if judge and not group.running.all():
            score = self.scores()
            fire = ~group.running & (self.tokens >= group.min_tokens) & (score >= group.threshold)
            transitions += self._fire(fire)
        transitions += [Transition(int(i), RESOLVED) for i in np.flatnonzero(self.firing)]
        self.firing[:] = False
        return transitions

    # -- reading -------------------------------------------------------------------------

    def feature_scores(self) -> np.ndarray:
        """[probes, features]: each feature's score under each probe's aggregation."""
        group = self.group
        scores = np.empty((len(group), group.num_features))
        for kind, rows in group.by_kind.items():
            if kind == "max":
                scores[rows] = self.peak
            elif kind == "mean":
                scores[rows] = self.total / self.tokens if self.tokens else -np.inf
            elif kind == "ema":
                scores[rows] = self.ema if not self._fresh else -np.inf
            else:
                scores[rows] = self.window_sum
        return scores

    def scores(self) -> np.ndarray:
        """[probes]: each probe's score now (-inf before any token)."""
        if self._fresh:
            return self._score
        group = self.group
        features = self.feature_scores()
        weighted = group.intercept + (group.weights * np.where(group.mask, features, 0.0)).sum(axis=1)
        strongest = np.where(group.mask, features, -np.inf).max(axis=1)
        return np.where(group.weighted, weighted, strongest)

    @property
    def judged(self) -> np.ndarray:
        """[probes]: the score the rule compares with the threshold (see the module doc)."""
        group = self.group
        final = np.where(self.tokens >= group.min_tokens, self.scores(), -np.inf)
        return np.where(group.running, self.best, final)

    def contributions(self, index: int) -> list[pb.FeatureContribution]:
        """The features of probe ``index`` with their scores and peaks, for a decision."""
        probe = self.group.probes[index]
        scores = self.feature_scores()[index]
        return [
            pb.FeatureContribution(
                feature=name,
                layer=layer,
                score=finite(float(scores[column])),
                peak_position=int(self.peak_position[column]),
                peak_value=finite(float(self.peak[column])),
            )
            for name, layer, column in zip(
                probe.feature_names, probe.feature_layers, probe.feature_indices, strict=True
            )
        ]

    def to_protos(self) -> list[pb.ProbeScore]:
        """One ProbeScore per probe, for the request's report."""
        group = self.group
        scores = self.scores()
        result = []
        for index, probe in enumerate(group.probes):
            columns = list(probe.feature_indices)
            strongest = columns[int(np.argmax(self.peak[columns]))]
            result.append(
                pb.ProbeScore(
                    probe=probe.name,
                    scope=probe.scope,
                    score=finite(float(scores[index])),
                    threshold=probe.spec.threshold,
                    tokens=self.tokens,
                    firing=bool(self.firing[index]),
                    fired=bool(self.fired[index]),
                    peak_position=int(self.peak_position[strongest]),
                    top_tokens=[
                        pb.TokenHit(position=position, value=value, feature=group.feature_names[feature])
                        for value, position, feature in sorted(self.top[index], reverse=True)
                    ],
                )
            )
        return result


def probe_groups(pack: ProbePack) -> dict[int, ProbeGroup]:
    """The pack's probes by scope (TOKEN_SCOPE_*), compiled."""
    probes = [CompiledProbe.from_pack(pack, spec) for spec in pack.spec.probes]
    names = [f.name for f in pack.spec.features]
    by_scope: dict[int, list[CompiledProbe]] = {}
    for probe in probes:
        by_scope.setdefault(probe.scope, []).append(probe)
    return {scope: ProbeGroup(members, len(names), names) for scope, members in by_scope.items()}


def finite(value: float) -> float:
    """Scores before any token are -inf internally; as reported they are 0."""
    return value if math.isfinite(value) else 0.0
