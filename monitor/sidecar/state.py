"""Per-request state: feature summaries folded into probe scores, bounded in memory.

The plugin sends, per step and request, each pack feature's max / argmax / sum /
count-above over the rows of that step. A probe folds those into one score per request and
scope:

- ``max``: the strongest token (exact).
- ``mean``: sum / tokens over the scope (exact).
- ``ema``: exponential moving average over tokens. Exact for decode steps (one token each);
  a prefill chunk of n tokens with mean m is folded as n tokens of value m, i.e.
  ``ema <- ema * (1-a)^n + m * (1 - (1-a)^n)``.
- ``window_count``: tokens above the feature threshold among the last ``window_tokens``.
  Exact for decode; a chunk's count is attributed to its last position.

A probe with several features scores the max over its features, or with ``weights``
``intercept + sum(weight x feature score)`` (a logistic-regression probe over SAE latents;
for ``mean`` this is exactly the regression's logit on the mean activations). Requests live in an LRU
table ordered by last activity, so idle eviction and the capacity cap cost O(evicted).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from monitor.probes.pack import ProbePack, ProbeSpec
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.tokens import apply_texts

SCOPES = {"prompt": pb.TOKEN_SCOPE_PROMPT, "response": pb.TOKEN_SCOPE_RESPONSE}
SEVERITIES = {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING, "critical": pb.SEVERITY_CRITICAL}
ACTIONS = {"alert": pb.ACTION_ALERT, "record": pb.ACTION_RECORD}
SCOPE_LABELS = {pb.TOKEN_SCOPE_PROMPT: "prompt", pb.TOKEN_SCOPE_RESPONSE: "response"}
#: Decisions kept per request in its report (a flapping probe must not grow memory).
MAX_DECISIONS_PER_REQUEST = 32
#: Strongest tokens kept per probe and request for the report (the forensic pointers).
TOP_TOKENS = 5


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
    scope: int
    severity: int
    action: int

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


@dataclass
class FeatureTrack:
    """One feature's running aggregates within one probe track."""

    peak: float = -math.inf
    peak_position: int = -1
    total: float = 0.0
    ema: float | None = None
    window: deque[tuple[int, int]] = field(default_factory=deque)
    window_sum: int = 0


class ProbeTrack:
    """One probe on one request: its aggregated score and firing state."""

    __slots__ = ("probe", "features", "tokens", "firing", "fired", "score", "top")

    def __init__(self, probe: CompiledProbe) -> None:
        self.probe = probe
        self.features = [FeatureTrack() for _ in probe.feature_indices]
        self.tokens = 0
        self.firing = False
        self.fired = False
        self.score = -math.inf
        # Min-heap of (value, position, feature index): the strongest step maxima. A decode
        # step is one token, so these are exact token peaks; a prefill chunk adds its peak.
        self.top: list[tuple[float, int, int]] = []

    def update(self, summary: pb.RequestSummary) -> None:
        """Fold one step's summary in (the summary's scope is this probe's scope)."""
        n = summary.num_tokens
        self.tokens += n
        spec = self.probe.spec
        last_position = summary.first_position + n - 1
        step_peak, step_position, step_feature = -math.inf, -1, 0
        weights = spec.weights
        for k, (track, i) in enumerate(zip(self.features, self.probe.feature_indices)):
            value = summary.max[i]
            weighted = value if weights is None else weights[k] * value
            if weighted > step_peak:
                step_peak, step_position, step_feature = weighted, summary.argmax_position[i], k
            if value > track.peak:
                track.peak = value
                track.peak_position = summary.argmax_position[i]
            total = summary.sum[i]
            track.total += total
            if spec.aggregation == "ema":
                mean = total / n
                if track.ema is None:
                    track.ema = mean
                else:
                    decay = (1.0 - spec.ema_alpha) ** n
                    track.ema = track.ema * decay + mean * (1.0 - decay)
            elif spec.aggregation == "window_count":
                track.window.append((last_position, summary.count_above[i]))
                track.window_sum += summary.count_above[i]
                horizon = last_position - spec.window_tokens
                while track.window and track.window[0][0] <= horizon:
                    track.window_sum -= track.window.popleft()[1]
        if weights is None:
            self.score = max(self.feature_score(t) for t in self.features)
        else:
            self.score = spec.intercept + sum(w * self.feature_score(t) for w, t in zip(weights, self.features))
        entry = (step_peak, step_position, step_feature)
        if len(self.top) < TOP_TOKENS:
            heapq.heappush(self.top, entry)
        elif entry > self.top[0]:
            heapq.heapreplace(self.top, entry)

    def feature_score(self, track: FeatureTrack) -> float:
        aggregation = self.probe.spec.aggregation
        if aggregation == "max":
            return track.peak
        if aggregation == "mean":
            return track.total / self.tokens if self.tokens else -math.inf
        if aggregation == "ema":
            return track.ema if track.ema is not None else -math.inf
        return float(track.window_sum)

    def contributions(self) -> list[pb.FeatureContribution]:
        return [
            pb.FeatureContribution(
                feature=name,
                layer=layer,
                score=_finite(self.feature_score(track)),
                peak_position=track.peak_position,
                peak_value=_finite(track.peak),
            )
            for name, layer, track in zip(
                self.probe.feature_names, self.probe.feature_layers, self.features
            )
        ]

    @property
    def reported_score(self) -> float:
        """The score as reported (0 before any token instead of -inf)."""
        return _finite(self.score)

    def peak_position(self) -> int:
        best = max(self.features, key=lambda t: t.peak)
        return best.peak_position

    def to_proto(self) -> pb.ProbeScore:
        return pb.ProbeScore(
            probe=self.probe.name,
            scope=self.probe.scope,
            score=self.reported_score,
            threshold=self.probe.spec.threshold,
            tokens=self.tokens,
            firing=self.firing,
            fired=self.fired,
            peak_position=self.peak_position(),
            top_tokens=[
                pb.TokenHit(position=position, value=value, feature=self.probe.feature_names[k])
                for value, position, k in sorted(self.top, reverse=True)
            ],
        )


class RequestState:
    """Everything the sidecar knows about one request."""

    __slots__ = (
        "request_id", "model_name", "first_seen", "last_seen", "tracks", "tokens",
        "decisions", "finished", "finish_reason", "prompt_tokens", "response_tokens",
        "token_ids", "texts",
    )  # fmt: skip

    def __init__(self, request_id: str, model_name: str, now: float) -> None:
        self.request_id = request_id
        self.model_name = model_name
        self.first_seen = now
        self.last_seen = now
        self.tracks: dict[str, ProbeTrack] = {}
        self.tokens = {pb.TOKEN_SCOPE_PROMPT: 0, pb.TOKEN_SCOPE_RESPONSE: 0}
        self.decisions: list[pb.Decision] = []
        self.finished = False
        self.finish_reason = pb.FINISH_REASON_UNSPECIFIED
        self.prompt_tokens = 0
        self.response_tokens = 0
        #: From the end marker (plugin.send_token_ids), until the sidecar made the texts.
        self.token_ids: list[int] | None = None
        #: {probe: {position: text}} of the top tokens, when the audit trail keeps token text.
        self.texts: dict[str, dict[str, str]] = {}

    def track(self, probe: CompiledProbe) -> ProbeTrack:
        """This request's track for ``probe``; a reloaded (changed) probe starts afresh."""
        track = self.tracks.get(probe.name)
        if track is None or track.probe is not probe:
            track = self.tracks[probe.name] = ProbeTrack(probe)
        return track

    def record(self, decision: pb.Decision) -> None:
        if len(self.decisions) < MAX_DECISIONS_PER_REQUEST:
            self.decisions.append(decision)

    def to_proto(self) -> pb.RequestReport:
        report = pb.RequestReport(
            request_id=self.request_id,
            model_name=self.model_name,
            finished=self.finished,
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens or self.tokens[pb.TOKEN_SCOPE_PROMPT],
            response_tokens=self.response_tokens or self.tokens[pb.TOKEN_SCOPE_RESPONSE],
            scores=[t.to_proto() for t in self.tracks.values()],
            decisions=self.decisions,
            first_seen_unix_nanos=int(self.first_seen * 1e9),
            last_seen_unix_nanos=int(self.last_seen * 1e9),
        )
        if self.texts:
            apply_texts(report, self.texts)
        return report


class RequestTable:
    """Active requests (LRU by last activity) and recently finished ones (FIFO, TTL)."""

    def __init__(self, max_active: int, max_finished: int, finished_retention: float) -> None:
        self.max_active = max_active
        self.max_finished = max_finished
        self.finished_retention = finished_retention
        self.active: OrderedDict[str, RequestState] = OrderedDict()
        self.finished: OrderedDict[str, tuple[float, RequestState]] = OrderedDict()

    def touch(self, request_id: str, model_name: str, now: float) -> RequestState | None:
        """The active state for ``request_id`` (created if new); None if it already finished."""
        state = self.active.get(request_id)
        if state is None:
            if request_id in self.finished:
                return None  # a late row (one more step after EOS): the report is closed
            state = self.active[request_id] = RequestState(request_id, model_name, now)
        else:
            self.active.move_to_end(request_id)
        state.last_seen = now
        return state

    def over_capacity(self) -> list[RequestState]:
        evicted = []
        while len(self.active) > self.max_active:
            evicted.append(self.active.popitem(last=False)[1])
        return evicted

    def idle(self, now: float, idle_seconds: float) -> list[RequestState]:
        evicted = []
        horizon = now - idle_seconds
        while self.active:
            state = next(iter(self.active.values()))
            if state.last_seen > horizon:
                break
            evicted.append(self.active.popitem(last=False)[1])
        return evicted

    def finish(self, state: RequestState, now: float) -> None:
        self.active.pop(state.request_id, None)
        if self.max_finished == 0:
            return
        self.finished[state.request_id] = (now, state)
        self.finished.move_to_end(state.request_id)
        while len(self.finished) > self.max_finished:
            self.finished.popitem(last=False)

    def expire(self, now: float) -> None:
        horizon = now - self.finished_retention
        while self.finished:
            finished_at, _ = next(iter(self.finished.values()))
            if finished_at > horizon:
                break
            self.finished.popitem(last=False)

    def get(self, request_id: str) -> RequestState | None:
        state = self.active.get(request_id)
        if state is not None:
            return state
        entry = self.finished.get(request_id)
        return entry[1] if entry else None


def _finite(value: float) -> float:
    """Scores before any token are -inf internally; on the wire they are 0."""
    return value if math.isfinite(value) else 0.0
