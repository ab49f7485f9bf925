"""What the sidecar knows about each request, in bounded tables.

A request's probe state lives in :class:`monitor.probe.ProbeTracks`, one per pack and scope;
this module adds the request's identity, timestamps, decisions and end-of-request facts,
and keeps requests in LRU tables ordered by last activity, so idle eviction and the
capacity cap cost O(evicted).

The capacity cap is per model, and within a model a request seen in one step only (what a
flood of made-up ids looks like) is evicted before any request seen in two or more steps:
a flood cannot push out the live traffic of another model, nor a request of its own model
that is mid-stream, until it has pushed out every one-step id first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from monitor.probe import ProbeGroup, ProbeTracks, TrackTable
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.token_text import apply_texts
from monitor.sidecar.trace import Trace, document

#: Decisions kept per request in its report (a flapping probe must not grow memory).
MAX_DECISIONS_PER_REQUEST = 32


class RequestState:
    """Everything the sidecar knows about one request."""

    __slots__ = (
        "decisions",
        "finish_reason",
        "finished",
        "first_seen",
        "last_seen",
        "live",
        "model_name",
        "pack_tokens",
        "pieces",
        "policy",
        "prompt_tokens",
        "request_id",
        "response_tokens",
        "stored_trace",
        "texts",
        "token_ids",
        "tokens",
        "traces",
        "tracks",
        "unscored",
    )

    def __init__(self, request_id: str, model_name: str, now: float) -> None:
        self.request_id = request_id
        self.model_name = model_name
        self.first_seen = now
        self.last_seen = now
        self.live = False  # seen in two or more batches (by arrival time): not a one-shot id
        self.tracks: dict[tuple[str, int], ProbeTracks] = {}
        #: tokens scored per scope (the most any pack has seen: every pack gets the same rows)
        self.tokens: dict[int, int] = {pb.TOKEN_SCOPE_PROMPT: 0, pb.TOKEN_SCOPE_RESPONSE: 0}
        self.pack_tokens: dict[tuple[str, int], int] = {}
        #: positions the plugin could not score, by pb.UnscoredReason
        self.unscored: dict[pb.UnscoredReason, int] = {}
        self.decisions: tuple[pb.Decision, ...] = ()  # a tuple: no object until the first decision
        self.finished = False
        self.finish_reason = pb.FINISH_REASON_UNSPECIFIED
        #: The policy the request was sent with (the plugin says so once): picks actions.
        self.policy = ""
        self.prompt_tokens = 0
        self.response_tokens = 0
        #: From the end marker (plugin.send_token_ids), until the sidecar made the texts.
        self.token_ids: list[int] | None = None
        #: {probe: {position: text}} of the top tokens, when the audit trail keeps token text.
        self.texts: dict[str, dict[str, str]] = {}
        #: Per pack and scope, the per-step scores for the forensic view (sidecar.ui.enabled);
        #: None until the first; a closed request keeps them only if they are to be stored.
        self.traces: dict[tuple[str, int], Trace] | None = None
        #: The request's tokens as redacted text, kept with the traces when token text is stored.
        self.pieces: list[str] | None = None
        #: The traces' document once the request closed (made once, for Redis and memory).
        self.stored_trace: dict[str, Any] | None = None

    def trace_for(self, pack: str, pack_version: str, group: ProbeGroup, limit: int) -> Trace:
        """This request's trace of a pack's probes of one scope (a reloaded pack starts afresh)."""
        if self.traces is None:
            self.traces = {}
        key = (pack, group.scope)
        trace = self.traces.get(key)
        if trace is None or trace.group is not group:
            trace = self.traces[key] = Trace(pack, pack_version, group, limit)
        return trace

    @property
    def flagged(self) -> bool:
        """A probe fired on this request."""
        return any(bool(tracks.fired.any()) for tracks in self.tracks.values())

    def trace_document(self) -> dict[str, Any] | None:
        """The traces as stored (made once when the request closed: ``stored_trace``), or as
        they are now for a live request; None if not kept."""
        if self.stored_trace is not None:
            return self.stored_trace
        return document(self.request_id, self.model_name, list(self.traces.values())) if self.traces else None

    def tracks_for(self, pack: str, group: ProbeGroup, table: TrackTable) -> ProbeTracks:
        """This request's row of a pack's probes of one scope; a reloaded pack starts afresh."""
        key = (pack, group.scope)
        tracks = self.tracks.get(key)
        if tracks is None or tracks.group is not group:
            tracks = self.tracks[key] = ProbeTracks(group, table)
        return tracks

    def add_tokens(self, pack: str, scope: int, count: int) -> int:
        """Count ``count`` tokens of ``scope`` scored by ``pack``; returns how many of them no
        pack had counted yet (what the scored-tokens metric adds)."""
        key = (pack, scope)
        total = self.pack_tokens.get(key, 0) + count
        self.pack_tokens[key] = total
        new = max(0, total - self.tokens[scope])
        self.tokens[scope] += new
        return new

    @property
    def coverage(self) -> float:
        """The share of the request's token positions the probes saw."""
        missing = sum(self.unscored.values())
        if not missing:
            return 1.0
        total = (self.prompt_tokens or self.tokens[pb.TOKEN_SCOPE_PROMPT]) + (
            self.response_tokens or self.tokens[pb.TOKEN_SCOPE_RESPONSE]
        )
        return max(0.0, 1.0 - missing / max(total, missing))

    def record(self, decision: pb.Decision) -> None:
        if len(self.decisions) < MAX_DECISIONS_PER_REQUEST:
            self.decisions = (*self.decisions, decision)

    def to_proto(self) -> pb.RequestReport:
        report = pb.RequestReport(
            request_id=self.request_id,
            model_name=self.model_name,
            finished=self.finished,
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens or self.tokens[pb.TOKEN_SCOPE_PROMPT],
            response_tokens=self.response_tokens or self.tokens[pb.TOKEN_SCOPE_RESPONSE],
            scores=[score for tracks in self.tracks.values() for score in tracks.to_protos()],
            decisions=self.decisions,
            first_seen_unix_nanos=int(self.first_seen * 1e9),
            last_seen_unix_nanos=int(self.last_seen * 1e9),
            unscored=[
                pb.UnscoredTokens(request_id=self.request_id, reason=reason, count=count)
                for reason, count in sorted(self.unscored.items())
            ],
            coverage=self.coverage,
        )
        if self.texts:
            apply_texts(report, self.texts)
        return report


class FinishedReport:
    """A finished request's report kept as its serialized bytes: a few KB and one object,
    instead of the live state's arrays and dicts (which also kept every full garbage
    collection busy walking tens of thousands of finished requests)."""

    __slots__ = ("data", "pieces", "trace")

    def __init__(
        self, report: pb.RequestReport, trace: dict[str, Any] | None = None, pieces: list[str] | None = None
    ) -> None:
        self.data = report.SerializeToString()
        self.trace = json.dumps(trace, separators=(",", ":")).encode() if trace is not None else None
        self.pieces = pieces

    def to_proto(self) -> pb.RequestReport:
        return pb.RequestReport.FromString(self.data)

    def trace_document(self) -> dict[str, Any] | None:
        return json.loads(self.trace) if self.trace is not None else None


class RequestTable:
    """Active requests (per model: one-step ids and the rest, each LRU by last activity)
    and recently finished ones (FIFO, TTL)."""

    def __init__(self, max_active: int, max_finished: int, finished_retention: float) -> None:
        self.max_active = max_active  # per model
        self.max_finished = max_finished
        self.finished_retention = finished_retention
        self.active: dict[str, RequestState] = {}
        self._young: dict[str, OrderedDict[str, RequestState]] = {}
        self._settled: dict[str, OrderedDict[str, RequestState]] = {}
        self.finished: OrderedDict[str, tuple[float, RequestState | FinishedReport]] = OrderedDict()

    def touch(self, request_id: str, model_name: str, now: float) -> RequestState | None:
        """The active state for ``request_id`` (created if new); None if it already finished."""
        state = self.active.get(request_id)
        if state is None:
            if request_id in self.finished:
                return None  # a late row (one more step after EOS): the report is closed
            state = self.active[request_id] = RequestState(request_id, model_name, now)
            self._young.setdefault(model_name, OrderedDict())[request_id] = state
            return state
        if state.live:
            self._settled[state.model_name].move_to_end(request_id)
        elif now > state.last_seen:  # a second step: live traffic
            state.live = True
            del self._young[state.model_name][request_id]
            self._settled.setdefault(state.model_name, OrderedDict())[request_id] = state
        else:
            self._young[state.model_name].move_to_end(request_id)
        state.last_seen = now
        return state

    def over_capacity(self) -> list[RequestState]:
        """Requests to evict so that no model holds more than ``max_active``: its one-step
        ids first, then its least recently seen."""
        evicted = []
        for model, young in self._young.items():
            settled = self._settled.get(model)
            excess = len(young) + (len(settled) if settled else 0) - self.max_active
            while excess > 0:
                queue = young if young else settled
                assert queue is not None
                state = queue.popitem(last=False)[1]
                del self.active[state.request_id]
                evicted.append(state)
                excess -= 1
        return evicted

    def idle(self, now: float, idle_seconds: float) -> list[RequestState]:
        evicted = []
        horizon = now - idle_seconds
        for queue in (*self._young.values(), *self._settled.values()):
            while queue:
                state = next(iter(queue.values()))
                if state.last_seen > horizon:
                    break
                queue.popitem(last=False)
                del self.active[state.request_id]
                evicted.append(state)
        return evicted

    def finish(self, state: RequestState, now: float) -> None:
        if self.active.pop(state.request_id, None) is not None:
            tier = self._settled if state.live else self._young
            del tier[state.model_name][state.request_id]
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

    def compact(self, state: RequestState) -> None:
        """Keep a finished request as its report's bytes once its outlets are done with it."""
        entry = self.finished.get(state.request_id)
        if entry is not None and entry[1] is state:
            finished = FinishedReport(state.to_proto(), state.trace_document(), state.pieces)
            self.finished[state.request_id] = (entry[0], finished)

    def get(self, request_id: str) -> RequestState | FinishedReport | None:
        state = self.active.get(request_id)
        if state is not None:
            return state
        entry = self.finished.get(request_id)
        return entry[1] if entry else None
