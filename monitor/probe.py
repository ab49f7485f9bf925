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

The state of a pack's probes of one scope is a row of arrays over the pack's features per
request (:class:`TrackTable`; a :class:`ProbeTracks` is one request's row), so the sidecar
folds a whole step batch with a fixed handful of array operations whatever the number of
requests, features and probes.
"""

from __future__ import annotations

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
ACTIONS: dict[str, pb.Action] = {"alert": pb.ACTION_ALERT, "record": pb.ACTION_RECORD, "abort": pb.ACTION_ABORT}
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
    #: The pack's policies that give this probe another action: policy name -> action.
    policy_actions: tuple[tuple[str, pb.Action], ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def action_for(self, policy: str) -> pb.Action:
        """The action for a request sent with ``policy`` ('' : none)."""
        if policy:
            for name, action in self.policy_actions:
                if name == policy:
                    return action
        return self.action

    @property
    def may_abort(self) -> bool:
        return self.action == pb.ACTION_ABORT or any(a == pb.ACTION_ABORT for _, a in self.policy_actions)

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
            policy_actions=tuple(
                (policy, ACTIONS[actions[spec.name]])
                for policy, actions in sorted(pack.spec.policies.items())
                if spec.name in actions
            ),
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

    def __len__(self) -> int:
        return len(self.probes)


class TrackTable:
    """One :class:`ProbeGroup`'s state on many requests: a row per request, in arrays.

    The sidecar keeps one table per pack and scope and folds a whole step batch with a fixed
    handful of array operations (:meth:`observe`), whatever the number of requests,
    features and probes; a :class:`ProbeTracks` is a handle on one row. Rows are reused once
    released (a finished request's handle is detached first, see :meth:`ProbeTracks.detach`).
    """

    # One row per request (allocated in _allocate, grown by doubling):
    tokens: np.ndarray  # int64 [N]
    peak: np.ndarray  # [N, F]
    peak_position: np.ndarray  # int64 [N, F]
    total: np.ndarray  # [N, F]
    firing: np.ndarray  # bool [N, P]
    fired: np.ndarray  # bool [N, P]
    best: np.ndarray  # [N, P]
    top_value: np.ndarray  # [N, P, TOP_TOKENS]
    top_position: np.ndarray  # int64 [N, P, TOP_TOKENS]
    top_feature: np.ndarray  # int64 [N, P, TOP_TOKENS]
    ema: np.ndarray  # [N, ema probes, F]
    window_sum: np.ndarray  # int64 [N, window probes, F]
    windows: list[Sequence[deque[tuple[int, np.ndarray]]]]  # per row, per window probe

    def __init__(self, group: ProbeGroup, capacity: int = 8) -> None:
        self.group = group
        self._free: list[int] = []
        self._used = 0
        self._allocate(max(1, capacity))

    def _allocate(self, capacity: int) -> None:
        group = self.group
        probes, features, top = len(group), group.num_features, TOP_TOKENS
        fresh = {
            "tokens": np.zeros(capacity, dtype=np.int64),
            "peak": np.full((capacity, features), -np.inf),
            "peak_position": np.full((capacity, features), -1, dtype=np.int64),
            "total": np.zeros((capacity, features)),
            "firing": np.zeros((capacity, probes), dtype=bool),
            "fired": np.zeros((capacity, probes), dtype=bool),
            #: The highest score once min_tokens were in scope (running probes' judged score).
            "best": np.full((capacity, probes), -np.inf),
            #: Per probe the strongest step maxima (value, position, feature): a decode step
            #: is one token, so these are exact token peaks.
            "top_value": np.full((capacity, probes, top), -np.inf),
            "top_position": np.full((capacity, probes, top), -1, dtype=np.int64),
            "top_feature": np.full((capacity, probes, top), -1, dtype=np.int64),
            "ema": np.zeros((capacity, len(group.by_kind.get("ema", ())), features)),
            "window_sum": np.zeros((capacity, len(group.windows), features), dtype=np.int64),
        }
        old = getattr(self, "tokens", None)
        for name, array in fresh.items():
            if old is not None:
                array[: len(old)] = getattr(self, name)
            setattr(self, name, array)
        # Without window probes every row shares one empty tuple: no object per request for
        # the garbage collector to walk.
        windows: list[Sequence[deque[tuple[int, np.ndarray]]]] = [
            [deque() for _ in group.windows] if group.windows else () for _ in range(capacity)
        ]
        if old is not None:
            windows[: len(old)] = self.windows
        self.windows = windows
        self.capacity = capacity

    def new_row(self) -> int:
        """A row in its initial state (no token seen)."""
        if self._free:
            return self._free.pop()
        if self._used == self.capacity:
            self._allocate(2 * self.capacity)
        self._used += 1
        return self._used - 1

    def release(self, row: int) -> None:
        """Forget a row's state; the row is reused."""
        self.tokens[row] = 0
        self.peak[row] = -np.inf
        self.peak_position[row] = -1
        self.total[row] = 0.0
        self.firing[row] = False
        self.fired[row] = False
        self.best[row] = -np.inf
        self.top_value[row] = -np.inf
        self.top_position[row] = -1
        self.top_feature[row] = -1
        self.ema[row] = 0.0
        self.window_sum[row] = 0
        for entries in self.windows[row]:
            entries.clear()
        self._free.append(row)

    # -- folding -------------------------------------------------------------------------

    def observe(
        self,
        rows: np.ndarray,
        first_positions: np.ndarray,
        num_tokens: np.ndarray,
        maxima: np.ndarray,
        argmax: np.ndarray,
        sums: np.ndarray,
        counts: np.ndarray,
    ) -> list[tuple[int, Transition]]:
        """Fold one step's summaries of several requests (``rows``, one summary each) in;
        the transitions the rule calls for, as (index into ``rows``, transition)."""
        if len(rows) > 1 and len(np.unique(rows)) != len(rows):
            # The same request twice in one batch: fold its summaries one after the other.
            result = []
            for i in range(len(rows)):
                pick = slice(i, i + 1)
                for _, transition in self.observe(
                    rows[pick],
                    first_positions[pick],
                    num_tokens[pick],
                    maxima[pick],
                    argmax[pick],
                    sums[pick],
                    counts[pick],
                ):
                    result.append((i, transition))
            return result
        group = self.group
        n = num_tokens.astype(np.int64)
        before = self.tokens[rows]
        self.tokens[rows] = before + n
        peak = self.peak[rows]
        better = maxima > peak
        self.peak[rows] = np.where(better, maxima, peak)
        self.peak_position[rows] = np.where(better, argmax, self.peak_position[rows])
        self.total[rows] += sums
        if group.ema_keep is not None:
            mean = (sums / n[:, None])[:, None, :]
            decay = group.ema_keep[None, :, :] ** n[:, None, None]
            folded = self.ema[rows] * decay + mean * (1.0 - decay)
            self.ema[rows] = np.where((before == 0)[:, None, None], mean, folded)
        if group.windows:
            last = first_positions + n - 1
            for i, row in enumerate(rows.tolist()):
                for w, (entries, length) in enumerate(zip(self.windows[row], group.windows, strict=True)):
                    entries.append((int(last[i]), counts[i]))
                    self.window_sum[row, w] += counts[i]
                    horizon = int(last[i]) - length
                    while entries and entries[0][0] <= horizon:
                        self.window_sum[row, w] -= entries.popleft()[1]
        self._push_top(rows, maxima, argmax)
        if not group.any_running:
            return []
        return self._judge_running(rows)

    def _push_top(self, rows: np.ndarray, maxima: np.ndarray, argmax: np.ndarray) -> None:
        """Each probe's strongest feature this step replaces its weakest kept entry if stronger."""
        group = self.group
        values = np.where(group.mask[None], group.top_scale[None] * maxima[:, None, :], -np.inf)  # [S, P, F]
        features = values.argmax(axis=2)  # [S, P]
        peaks = np.take_along_axis(values, features[:, :, None], axis=2)[:, :, 0]
        positions = np.take_along_axis(argmax, features, axis=1)
        kept_value, kept_position = self.top_value[rows], self.top_position[rows]  # [S, P, K]
        # The weakest kept entry: lowest value, then lowest position (empty slots are -inf).
        slot = np.lexsort((kept_position, kept_value), axis=2)[:, :, 0]
        weakest = np.take_along_axis(kept_value, slot[:, :, None], axis=2)[:, :, 0]
        weakest_position = np.take_along_axis(kept_position, slot[:, :, None], axis=2)[:, :, 0]
        replace = (peaks > weakest) | ((peaks == weakest) & (positions > weakest_position))
        s, p = np.nonzero(replace)
        if s.size:
            target = rows[s]
            k = slot[s, p]
            self.top_value[target, p, k] = peaks[s, p]
            self.top_position[target, p, k] = positions[s, p]
            self.top_feature[target, p, k] = features[s, p]

    def _judge_running(self, rows: np.ndarray) -> list[tuple[int, Transition]]:
        group = self.group
        score = self.scores(rows)  # [S, P]
        eligible = group.running[None] & (self.tokens[rows][:, None] >= group.min_tokens[None])
        self.best[rows] = np.where(eligible, np.maximum(self.best[rows], score), self.best[rows])
        firing, fired = self.firing[rows], self.fired[rows]
        fire = eligible & ~firing & (score >= group.threshold[None])
        resolve = group.running[None] & firing & (score < group.floor[None])
        if not (fire.any() or resolve.any()):
            return []
        self.firing[rows] = (firing | fire) & ~resolve
        self.fired[rows] = fired | fire
        transitions = [
            (int(i), Transition(int(j), FIRED, not fired[i, j])) for i, j in zip(*np.nonzero(fire), strict=True)
        ]
        transitions += [(int(i), Transition(int(j), RESOLVED)) for i, j in zip(*np.nonzero(resolve), strict=True)]
        return transitions

    def close(self, row: int, *, judge: bool = True) -> list[Transition]:
        """One request ended (``judge``) or was evicted: judge its ``end`` probes, then
        resolve every firing probe. Transitions in order."""
        group = self.group
        transitions: list[Transition] = []
        if judge and not group.running.all():
            score = self.scores(np.array([row]))[0]
            fire = ~group.running & (self.tokens[row] >= group.min_tokens) & (score >= group.threshold)
            transitions += [Transition(int(j), FIRED, not self.fired[row, j]) for j in np.flatnonzero(fire)]
            self.firing[row] |= fire
            self.fired[row] |= fire
        transitions += [Transition(int(j), RESOLVED) for j in np.flatnonzero(self.firing[row])]
        self.firing[row] = False
        return transitions

    # -- reading -------------------------------------------------------------------------

    def feature_scores(self, rows: np.ndarray) -> np.ndarray:
        """[rows, probes, features]: each feature's score under each probe's aggregation."""
        group = self.group
        scores = np.empty((len(rows), len(group), group.num_features))
        tokens = self.tokens[rows]
        for kind, members in group.by_kind.items():
            if kind == "max":
                scores[:, members] = self.peak[rows][:, None, :]
            elif kind == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(tokens[:, None] > 0, self.total[rows] / np.maximum(tokens, 1)[:, None], -np.inf)
                scores[:, members] = mean[:, None, :]
            elif kind == "ema":
                scores[:, members] = np.where(tokens[:, None, None] > 0, self.ema[rows], -np.inf)
            else:
                scores[:, members] = self.window_sum[rows]
        return scores

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """[rows, probes]: each probe's score now (-inf before any token)."""
        group = self.group
        features = self.feature_scores(rows)
        weighted = group.intercept[None] + (group.weights[None] * np.where(group.mask[None], features, 0.0)).sum(axis=2)
        strongest = np.where(group.mask[None], features, -np.inf).max(axis=2)
        score = np.where(group.weighted[None], weighted, strongest)
        return np.where((self.tokens[rows] > 0)[:, None], score, -np.inf)


class ProbeTracks:
    """All of one :class:`ProbeGroup`'s probes on one request: a row of a :class:`TrackTable`
    (a table of its own when none is given, as the offline evaluator uses it)."""

    __slots__ = ("group", "row", "table")

    def __init__(self, group: ProbeGroup, table: TrackTable | None = None) -> None:
        self.group = group
        self.table = table if table is not None else TrackTable(group, capacity=1)
        self.row = self.table.new_row()

    @property
    def tokens(self) -> int:
        return int(self.table.tokens[self.row])

    @property
    def firing(self) -> np.ndarray:
        return self.table.firing[self.row]

    @property
    def fired(self) -> np.ndarray:
        return self.table.fired[self.row]

    def observe(self, step: Step) -> list[Transition]:
        """Fold one step in; the transitions the rule calls for, if any."""
        table = self.table
        transitions = table.observe(
            np.array([self.row]),
            np.array([step.first_position]),
            np.array([step.num_tokens]),
            step.max[None],
            step.argmax[None],
            step.sum[None],
            step.count[None],
        )
        return [transition for _, transition in transitions]

    def close(self, *, judge: bool = True) -> list[Transition]:
        """The request ended (``judge``) or was evicted: judge the ``end`` probes, then
        resolve every firing probe. Transitions in order, as from :meth:`observe`."""
        return self.table.close(self.row, judge=judge)

    def detach(self) -> None:
        """Move this request's state into a table of its own and give the shared row back
        (a finished request keeps its report, not a row of the live table)."""
        shared, row = self.table, self.row
        if shared.capacity == 1:
            return
        own = TrackTable(self.group, capacity=1)
        mine = own.new_row()
        for name in ("tokens", "peak", "peak_position", "total", "firing", "fired", "best",
                     "top_value", "top_position", "top_feature", "ema", "window_sum"):  # fmt: skip
            getattr(own, name)[mine] = getattr(shared, name)[row]
        own.windows[mine] = [deque(entries) for entries in shared.windows[row]] if shared.windows[row] else ()
        shared.release(row)
        self.table, self.row = own, mine

    def scores(self) -> np.ndarray:
        """[probes]: each probe's score now (-inf before any token)."""
        return self.table.scores(np.array([self.row]))[0]

    @property
    def judged(self) -> np.ndarray:
        """[probes]: the score the rule compares with the threshold (see the module doc)."""
        group = self.group
        final = np.where(self.tokens >= group.min_tokens, self.scores(), -np.inf)
        return np.where(group.running, self.table.best[self.row], final)

    def contributions(self, index: int) -> list[pb.FeatureContribution]:
        """The features of probe ``index`` with their scores and peaks, for a decision."""
        table, row = self.table, self.row
        probe = self.group.probes[index]
        scores = table.feature_scores(np.array([row]))[0, index]
        return [
            pb.FeatureContribution(
                feature=name,
                layer=layer,
                score=finite(float(scores[column])),
                peak_position=int(table.peak_position[row, column]),
                peak_value=finite(float(table.peak[row, column])),
            )
            for name, layer, column in zip(
                probe.feature_names, probe.feature_layers, probe.feature_indices, strict=True
            )
        ]

    def to_protos(self) -> list[pb.ProbeScore]:
        """One ProbeScore per probe, for the request's report."""
        table, row, group = self.table, self.row, self.group
        scores = self.scores()
        result = []
        for index, probe in enumerate(group.probes):
            columns = list(probe.feature_indices)
            strongest = columns[int(np.argmax(table.peak[row, columns]))]
            kept = [
                (float(value), int(position), int(feature))
                for value, position, feature in zip(
                    table.top_value[row, index],
                    table.top_position[row, index],
                    table.top_feature[row, index],
                    strict=True,
                )
                if feature >= 0
            ]
            result.append(
                pb.ProbeScore(
                    probe=probe.name,
                    scope=probe.scope,
                    score=finite(float(scores[index])),
                    threshold=probe.spec.threshold,
                    tokens=self.tokens,
                    firing=bool(table.firing[row, index]),
                    fired=bool(table.fired[row, index]),
                    peak_position=int(table.peak_position[row, strongest]),
                    top_tokens=[
                        pb.TokenHit(position=position, value=value, feature=group.feature_names[feature])
                        for value, position, feature in sorted(kept, reverse=True)
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
