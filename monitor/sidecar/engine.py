"""The scorer: validates step batches, folds them into request state, emits decisions.

Synchronous and single-threaded: the server feeds it from one asyncio task, so it needs no
locks. Validation is separate from application so the ingest stream can reject a bad batch
(and say why in its response) before it is queued; a batch is applied whole or not at all.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from monitor.config import SidecarSettings
from monitor.probes.pack import PackSet
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.rules import decide, decide_at_end
from monitor.sidecar.state import (
    SCOPE_LABELS,
    CompiledProbe,
    ProbeTrack,
    RequestState,
    RequestTable,
)

SEVERITY_LABELS = {pb.SEVERITY_INFO: "info", pb.SEVERITY_WARNING: "warning", pb.SEVERITY_CRITICAL: "critical"}
KIND_LABELS = {pb.DECISION_KIND_FIRED: "fired", pb.DECISION_KIND_RESOLVED: "resolved"}


class Rejected(Exception):
    """A batch that cannot be scored; ``reason`` is a saemon_events_dropped_total label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CompiledPack:
    name: str
    version: str
    feature_count: int
    probes_by_scope: dict[int, tuple[CompiledProbe, ...]]


class Engine:
    def __init__(
        self,
        settings: SidecarSettings,
        metrics: SidecarMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.table = RequestTable(
            settings.max_active_requests,
            settings.max_finished_requests,
            settings.finished_retention_seconds,
        )
        self.packs = PackSet()
        self._compiled: dict[str, CompiledPack] = {}
        self._probes: list[CompiledProbe] = []
        #: Requests closed (finished or evicted) since the last drain_closed().
        self._closed: list[RequestState] = []

    # -- probe packs ---------------------------------------------------------------------

    def set_packs(self, packs: PackSet) -> None:
        compiled, probes = {}, []
        for pack in packs.packs:
            by_scope: dict[int, list[CompiledProbe]] = {}
            for spec in pack.spec.probes:
                probe = CompiledProbe.from_pack(pack, spec)
                probes.append(probe)
                by_scope.setdefault(probe.scope, []).append(probe)
            compiled[pack.name] = CompiledPack(
                pack.name,
                pack.version,
                len(pack.spec.features),
                {scope: tuple(ps) for scope, ps in by_scope.items()},
            )
        self.packs, self._compiled, self._probes = packs, compiled, probes
        self.metrics.probes_loaded.set(len(probes))

    def probe_infos(self) -> list[pb.ProbeInfo]:
        infos = []
        for probe in self._probes:
            spec = probe.spec
            pack = self.packs.get(probe.pack)
            infos.append(
                pb.ProbeInfo(
                    name=spec.name,
                    concept=spec.concept,
                    pack=probe.pack,
                    pack_version=probe.pack_version,
                    model_name=pack.spec.model.name if pack else "",
                    features=probe.feature_names,
                    layers=sorted(set(probe.feature_layers)),
                    aggregation=spec.aggregation,
                    scope=probe.scope,
                    threshold=spec.threshold,
                    target_fpr=spec.target_fpr or 0.0,
                    min_tokens=spec.min_tokens,
                    hysteresis=spec.hysteresis,
                    severity=probe.severity,
                    action=probe.action,
                )
            )
        return infos

    # -- ingest --------------------------------------------------------------------------

    def validate(self, batch: pb.StepBatch) -> None:
        """Raise Rejected if ``batch`` cannot be scored as a whole."""
        if not batch.model_name:
            raise Rejected("malformed", "StepBatch.model_name is empty")
        pack = self._compiled.get(batch.pack)
        if pack is None:
            loaded = sorted(self._compiled) or ["none"]
            raise Rejected(
                "unknown_pack",
                f"StepBatch.pack {batch.pack!r} is not loaded (loaded: {', '.join(loaded)})",
            )
        if batch.pack_version != pack.version:
            raise Rejected(
                "unknown_pack",
                f"pack {batch.pack!r} version {batch.pack_version!r} is not the loaded version "
                f"{pack.version!r}: the plugin and the sidecar must load the same pack",
            )
        f = pack.feature_count
        for summary in batch.requests:
            if not summary.request_id:
                raise Rejected("malformed", "RequestSummary.request_id is empty")
            if summary.scope not in SCOPE_LABELS:
                raise Rejected("malformed", f"request {summary.request_id}: scope is unspecified")
            if summary.num_tokens == 0:
                raise Rejected("malformed", f"request {summary.request_id}: num_tokens is 0")
            if not (len(summary.max) == len(summary.sum) == len(summary.argmax_position)
                    == len(summary.count_above) == f):  # fmt: skip
                raise Rejected(
                    "malformed",
                    f"request {summary.request_id}: feature arrays have lengths "
                    f"{len(summary.max)}/{len(summary.argmax_position)}/{len(summary.sum)}/"
                    f"{len(summary.count_above)}, pack {batch.pack!r} has {f} features",
                )
            if not all(map(math.isfinite, summary.max)) or not all(map(math.isfinite, summary.sum)):
                raise Rejected("non_finite", f"request {summary.request_id}: NaN or infinite score")
        for end in batch.ends:
            if not end.request_id:
                raise Rejected("malformed", "RequestEnd.request_id is empty")

    def apply(self, batch: pb.StepBatch) -> list[pb.Decision]:
        """Fold a validated batch into request state; returns the decisions it caused."""
        now = self.clock()
        pack = self._compiled.get(batch.pack)
        decisions: list[pb.Decision] = []
        if pack is None or pack.version != batch.pack_version:
            # The pack was reloaded away between validation and now.
            self.metrics.dropped.labels("unknown_pack").inc()
            return decisions
        model = batch.model_name
        tokens_scored = self.metrics.tokens_scored
        for summary in batch.requests:
            state = self.table.touch(summary.request_id, model, now)
            if state is None:
                continue
            state.tokens[summary.scope] += summary.num_tokens
            tokens_scored.labels(model, SCOPE_LABELS[summary.scope]).inc(summary.num_tokens)
            for probe in pack.probes_by_scope.get(summary.scope, ()):
                track = state.track(probe)
                track.update(summary)
                kind = decide(track)
                if kind is not None:
                    decisions.append(self._decide(state, track, kind, batch.produced_unix_nanos, now))
        for end in batch.ends:
            state = self.table.touch(end.request_id, model, now)
            if state is not None:
                state.finish_reason = end.finish_reason
                state.prompt_tokens = end.prompt_tokens
                state.response_tokens = end.response_tokens
                if end.token_ids:
                    state.token_ids = list(end.token_ids)
                decisions += self._close(state, now, batch.produced_unix_nanos)
        for state in self.table.over_capacity():
            self.metrics.requests_evicted.labels("capacity").inc()
            decisions += self._close(state, now, batch.produced_unix_nanos, finished=False)
        self.metrics.requests_active.set(len(self.table.active))
        if batch.produced_unix_nanos > 0:
            self.metrics.ingest_latency.observe(max(0.0, now - batch.produced_unix_nanos / 1e9))
        return decisions

    def sweep(self) -> list[pb.Decision]:
        """Evict idle requests and expire old reports; call about once a second."""
        now = self.clock()
        decisions = []
        for state in self.table.idle(now, self.settings.request_idle_seconds):
            self.metrics.requests_evicted.labels("idle").inc()
            decisions += self._close(state, now, 0, finished=False)
        self.table.expire(now)
        self.metrics.requests_active.set(len(self.table.active))
        return decisions

    def report(self, request_id: str, *, active_only: bool = False) -> pb.RequestReport | None:
        """A request's report from memory: live while active, then until retention ends."""
        state = self.table.active.get(request_id) if active_only else self.table.get(request_id)
        return state.to_proto() if state is not None else None

    def drain_closed(self) -> list[RequestState]:
        """Requests closed since the last call (their reports go to the audit store)."""
        closed, self._closed = self._closed, []
        return closed

    # -- decisions -----------------------------------------------------------------------

    def _decide(
        self, state: RequestState, track: ProbeTrack, kind: int, produced: int, now: float
    ) -> pb.Decision:
        probe = track.probe
        if kind == pb.DECISION_KIND_FIRED:
            track.firing = True
            if not track.fired:
                track.fired = True
                self.metrics.requests_flagged.labels(
                    state.model_name, probe.name, SEVERITY_LABELS[probe.severity]
                ).inc()
        else:
            track.firing = False
        self.metrics.decisions.labels(
            state.model_name, probe.name, SEVERITY_LABELS[probe.severity], KIND_LABELS[kind]
        ).inc()
        decision = pb.Decision(
            id=uuid.uuid4().hex,
            kind=kind,
            request_id=state.request_id,
            model_name=state.model_name,
            probe=probe.name,
            concept=probe.spec.concept,
            pack=probe.pack,
            pack_version=probe.pack_version,
            scope=probe.scope,
            severity=probe.severity,
            action=probe.action,
            score=track.reported_score,
            threshold=probe.spec.threshold,
            tokens=track.tokens,
            features=track.contributions(),
            decided_unix_nanos=int(now * 1e9),
            produced_unix_nanos=produced,
        )
        state.record(decision)
        return decision

    def _close(
        self, state: RequestState, now: float, produced: int, *, finished: bool = True
    ) -> list[pb.Decision]:
        """End a request: judge the probes decided at the end, resolve what is firing,
        observe final scores, keep its report."""
        decisions = []
        if finished:
            for track in state.tracks.values():
                if decide_at_end(track) is not None:
                    decisions.append(self._decide(state, track, pb.DECISION_KIND_FIRED, produced, now))
        decisions += [
            self._decide(state, track, pb.DECISION_KIND_RESOLVED, produced, now)
            for track in state.tracks.values()
            if track.firing
        ]
        state.finished = finished
        if finished:
            if any(state.tokens.values()):
                self.metrics.requests_scored.labels(state.model_name).inc()
            for track in state.tracks.values():
                if track.tokens:
                    self.metrics.probe_score.labels(state.model_name, track.probe.name).observe(
                        track.reported_score
                    )
        self.table.finish(state, now)
        self._closed.append(state)
        return decisions
