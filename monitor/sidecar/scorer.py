"""The scorer: validates step batches, folds them into request state, emits decisions.

Synchronous and single-threaded: the server feeds it from one asyncio task, so it needs no
locks. Validation is separate from application so the ingest stream can reject a bad batch
(and say why in its response) before it is queued. A batch whose frame is wrong (unknown
pack, column bytes that do not fit the pack) is refused whole; a bad row (an empty or
overlong id, a position or count out of range, NaN) is refused alone and the batch's good
rows are scored, so one bad summary loses nothing already valid.
Validation decodes the batch's summaries into arrays once (:class:`Columns`, from either
wire form); applying folds each row into the request's :class:`monitor.probe.ProbeTracks`
and turns the transitions the rule reports into decisions.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from monitor.config import MAX_MODEL_NAME_LENGTH, SidecarSettings
from monitor.errors import PackError
from monitor.pack import PackSet
from monitor.probe import (
    SCOPE_LABELS,
    CompiledProbe,
    ProbeGroup,
    ProbeTracks,
    TrackTable,
    Transition,
    finite,
    probe_groups,
)
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.request_state import RequestState, RequestTable
from monitor.sidecar.trace import token_values

SEVERITY_LABELS: dict[int, str] = {
    pb.SEVERITY_INFO: "info",
    pb.SEVERITY_WARNING: "warning",
    pb.SEVERITY_CRITICAL: "critical",
}
UNSCORED_LABELS: dict[int, str] = {
    pb.UNSCORED_REASON_NOT_SEEN: "not_seen",
    pb.UNSCORED_REASON_RESET: "reset",
}
KIND_LABELS: dict[int, str] = {pb.DECISION_KIND_FIRED: "fired", pb.DECISION_KIND_RESOLVED: "resolved"}

#: Bounds on what a step can carry. A position (and so a token count) beyond 2^24 is more
#: than any context window vLLM serves; an id or model name longer than these is not one
#: vLLM makes, and both become label values or Redis keys.
MAX_POSITION = 1 << 24
MAX_ID_LENGTH = 512
#: Longest policy name a request can carry (pack policies are at most 64 characters).
MAX_POLICY_LENGTH = 64
#: Longest request id put in an exemplar (its labels may hold 128 characters in all).
MAX_EXEMPLAR_ID = 100


class Rejected(Exception):
    """A batch that cannot be scored; ``reason`` is a saemon_events_dropped_total label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CompiledPack:
    name: str
    version: str
    model_name: str
    feature_count: int
    groups: dict[int, ProbeGroup]  # by scope
    probes: tuple[CompiledProbe, ...]  # in the pack's order
    tables: dict[int, TrackTable]  # by scope: the live requests' state


@dataclass(frozen=True)
class Columns:
    """A batch's summaries as arrays: row i is one request and scope."""

    request_ids: list[str]
    scopes: np.ndarray  # int [S]
    first_positions: np.ndarray  # int64 [S]
    num_tokens: np.ndarray  # int64 [S]
    max: np.ndarray  # float32 [S, F]
    argmax: np.ndarray  # int64 [S, F]
    sum: np.ndarray  # float32 [S, F]
    count: np.ndarray  # uint32 [S, F]
    #: Rows refused on their own (the rows above are the valid ones), by reason, and the
    #: first refused row's problem.
    rejected: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    def select(self, keep: np.ndarray) -> Columns:
        picked = np.flatnonzero(keep)
        return replace(
            self,
            request_ids=[self.request_ids[i] for i in picked.tolist()],
            scopes=self.scopes[picked],
            first_positions=self.first_positions[picked],
            num_tokens=self.num_tokens[picked],
            max=self.max[picked],
            argmax=self.argmax[picked],
            sum=self.sum[picked],
            count=self.count[picked],
        )


_EMPTY = Columns(
    [],
    np.zeros(0, np.int64),
    np.zeros(0, np.int64),
    np.zeros(0, np.int64),
    np.zeros((0, 0), np.float32),
    np.zeros((0, 0), np.int64),
    np.zeros((0, 0), np.float32),
    np.zeros((0, 0), np.uint32),
)


def decode(batch: pb.StepBatch, features: int) -> Columns:
    """The batch's summaries as arrays (either wire form), or Rejected naming the problem."""
    if batch.requests and batch.HasField("columns"):
        raise Rejected("malformed", "StepBatch carries both requests and columns; send one form")
    if batch.HasField("columns"):
        return _from_columns(batch.columns, features)
    if not batch.requests:
        return _EMPTY
    summaries, rejected, first_error = [], Counter[str](), ""
    for summary in batch.requests:
        if len(summary.max) == len(summary.sum) == len(summary.argmax_position) == len(summary.count_above) == features:
            summaries.append(summary)
            continue
        rejected["malformed"] += 1
        first_error = first_error or (
            f"request {summary.request_id[:MAX_ID_LENGTH]!r}: feature arrays have lengths "
            f"{len(summary.max)}/{len(summary.argmax_position)}/{len(summary.sum)}/"
            f"{len(summary.count_above)}, pack {batch.pack!r} has {features} features"
        )
    if not summaries:
        return replace(_EMPTY, rejected=rejected, first_error=first_error)
    return _checked(
        Columns(
            request_ids=[s.request_id for s in summaries],
            scopes=np.array([s.scope for s in summaries], dtype=np.int64),
            first_positions=np.array([s.first_position for s in summaries], dtype=np.int64),
            num_tokens=np.array([s.num_tokens for s in summaries], dtype=np.int64),
            max=np.array([s.max for s in summaries], dtype=np.float32),
            argmax=np.array([s.argmax_position for s in summaries], dtype=np.int64),
            sum=np.array([s.sum for s in summaries], dtype=np.float32),
            count=np.array([s.count_above for s in summaries], dtype=np.uint32),
            rejected=rejected,
            first_error=first_error,
        )
    )


def _from_columns(columns: pb.SummaryColumns, features: int) -> Columns:
    rows = len(columns.request_id)
    lengths = (len(columns.scope), len(columns.first_position), len(columns.num_tokens))
    if lengths != (rows,) * 3:
        raise Rejected(
            "malformed",
            f"SummaryColumns: {rows} request ids but {lengths[0]} scopes, {lengths[1]} first positions "
            f"and {lengths[2]} token counts; give one of each per row",
        )
    arrays = {}
    for name, dtype in (("max", "<f4"), ("argmax_position", "<i8"), ("sum", "<f4"), ("count_above", "<u4")):
        data = getattr(columns, name)
        expected = rows * features * np.dtype(dtype).itemsize
        if len(data) != expected:
            raise Rejected(
                "malformed",
                f"SummaryColumns.{name} has {len(data)} bytes; {rows} rows x {features} features of "
                f"{np.dtype(dtype).name} need {expected}",
            )
        arrays[name] = np.frombuffer(data, dtype=dtype).reshape(rows, features)
    return _checked(
        Columns(
            request_ids=list(columns.request_id),
            scopes=np.array(columns.scope, dtype=np.int64),
            first_positions=np.array(columns.first_position, dtype=np.int64),
            num_tokens=np.array(columns.num_tokens, dtype=np.int64),
            max=arrays["max"],
            argmax=arrays["argmax_position"],
            sum=arrays["sum"],
            count=arrays["count_above"],
        )
    )


def _checked(columns: Columns) -> Columns:
    """Row checks shared by both wire forms: the rows that fail one are refused alone,
    counted by reason, and the first is named."""
    ids = columns.request_ids
    if not ids:
        return columns
    first, num, argmax = columns.first_positions, columns.num_tokens, columns.argmax
    checks = (
        ("malformed", np.array([0 < len(i) <= MAX_ID_LENGTH for i in ids]), "request_id is empty or too long"),
        ("malformed", np.isin(columns.scopes, list(SCOPE_LABELS)), "scope is unspecified or unknown"),
        ("malformed", num > 0, "num_tokens is 0"),
        ("out_of_range", num <= MAX_POSITION, f"num_tokens is above {MAX_POSITION}"),
        ("out_of_range", (first >= 0) & (first < MAX_POSITION), f"first_position is outside 0..{MAX_POSITION}"),
        (
            "out_of_range",
            ((argmax >= first[:, None]) & (argmax < MAX_POSITION)).all(axis=1),
            "an argmax position is before the row's first position or beyond any context",
        ),
        ("out_of_range", (columns.count <= num[:, None]).all(axis=1), "a count_above exceeds num_tokens"),
        (
            "non_finite",
            np.isfinite(columns.max).all(axis=1) & np.isfinite(columns.sum).all(axis=1),
            "NaN or infinite score",
        ),
    )
    good = np.ones(len(ids), bool)
    rejected, first_error = Counter(columns.rejected), columns.first_error
    for reason, ok, problem in checks:
        bad = good & ~ok
        if bad.any():
            rejected[reason] += int(bad.sum())
            row = int(np.argmax(bad))
            first_error = first_error or f"request {ids[row][:MAX_ID_LENGTH]!r}: {problem}"
            good &= ok
    if good.all():
        return columns
    return replace(columns.select(good), rejected=rejected, first_error=first_error)


def token_rows(entry: pb.TokenScores, features: int) -> tuple[np.ndarray, np.ndarray] | str:
    """A TokenScores entry as (positions [n], values [n, F]), or what is wrong with it."""
    if len(entry.positions) % 8:
        return f"TokenScores for {entry.request_id[:MAX_ID_LENGTH]!r}: positions has {len(entry.positions)} bytes, not int64s"
    positions = np.frombuffer(entry.positions, dtype="<i8")
    expected = len(positions) * features * 4
    if len(entry.values) != expected:
        return (
            f"TokenScores for {entry.request_id[:MAX_ID_LENGTH]!r}: values has {len(entry.values)} bytes; "
            f"{len(positions)} positions x {features} features of float32 need {expected}"
        )
    values = np.frombuffer(entry.values, dtype="<f4").reshape(len(positions), features)
    if not ((positions >= 0) & (positions < MAX_POSITION)).all():
        return f"TokenScores for {entry.request_id[:MAX_ID_LENGTH]!r}: a position is outside 0..{MAX_POSITION}"
    if not np.isfinite(values).all():
        return f"TokenScores for {entry.request_id[:MAX_ID_LENGTH]!r}: NaN or infinite value"
    return positions, values


def _checked_token_scores(batch: pb.StepBatch, features: int, columns: Columns) -> Columns:
    """Bad TokenScores entries are counted as refused rows (malformed) and named; the
    scorer skips them, the batch's summaries are scored regardless."""
    problems = [p for p in (token_rows(e, features) for e in batch.token_scores) if isinstance(p, str)]
    if not problems:
        return columns
    rejected = Counter(columns.rejected)
    rejected["malformed"] += len(problems)
    return replace(columns, rejected=rejected, first_error=columns.first_error or problems[0])


class Scorer:
    def __init__(
        self,
        settings: SidecarSettings,
        metrics: SidecarMetrics,
        clock: Callable[[], float] = time.time,
        served: Iterable[str] = (),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        #: Model names accepted whatever the packs (the configured model.name)
        self.served = frozenset(served) | frozenset(settings.model_names)
        self.models = self.served
        self.table = RequestTable(
            settings.max_active_requests,
            settings.max_finished_requests,
            settings.finished_retention_seconds,
        )
        self.packs = PackSet()
        self._compiled: dict[str, CompiledPack] = {}
        #: Requests closed (finished or evicted) since the last drain_closed().
        self._closed: list[RequestState] = []
        #: Steps traced per request, pack and scope for the forensic view (0: not traced).
        ui = settings.ui
        self.trace_steps = ui.trace_steps if ui.enabled else 0
        self.keep_all_traces = ui.keep == "all"

    # -- probe packs ---------------------------------------------------------------------

    def set_packs(self, packs: PackSet) -> None:
        """Use these packs from now on; PackError (nothing changed) if they would take the
        accepted model names past sidecar.max_model_names."""
        models = self.served | {pack.spec.model.name for pack in packs.packs}
        if len(models) > self.settings.max_model_names:
            raise PackError(
                f"{len(models)} model names (the packs' models and sidecar.model_names) exceed "
                f"sidecar.max_model_names ({self.settings.max_model_names}); each is a label value "
                "on every metric: raise the cap deliberately or serve fewer models per sidecar"
            )
        compiled = {}
        for pack in packs.packs:
            groups = probe_groups(pack)
            by_name = {probe.name: probe for group in groups.values() for probe in group.probes}
            probes = tuple(by_name[spec.name] for spec in pack.spec.probes)
            tables = {scope: TrackTable(group, capacity=256) for scope, group in groups.items()}
            compiled[pack.name] = CompiledPack(
                pack.name, pack.version, pack.spec.model.name, len(pack.spec.features), groups, probes, tables
            )
        self.packs, self._compiled, self.models = packs, compiled, frozenset(models)
        self.metrics.probes_loaded.set(sum(len(p.spec.probes) for p in packs.packs))

    def probes(self) -> list[tuple[str, CompiledProbe]]:
        """(model name, probe) of every loaded probe, in the packs' order."""
        return [(pack.model_name, probe) for pack in self._compiled.values() for probe in pack.probes]

    def probe_infos(self) -> list[pb.ProbeInfo]:
        infos = []
        for model_name, probe in self.probes():
            spec = probe.spec
            infos.append(
                pb.ProbeInfo(
                    name=spec.name,
                    concept=spec.concept,
                    pack=probe.pack,
                    pack_version=probe.pack_version,
                    model_name=model_name,
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

    def validate(self, batch: pb.StepBatch) -> Columns:
        """The batch's summaries decoded; Rejected if it cannot be scored as a whole."""
        if not batch.model_name:
            raise Rejected("malformed", "StepBatch.model_name is empty")
        if len(batch.model_name) > MAX_MODEL_NAME_LENGTH or not batch.model_name.isprintable():
            raise Rejected(
                "malformed",
                f"StepBatch.model_name {batch.model_name[:64]!r}... is longer than {MAX_MODEL_NAME_LENGTH} "
                "characters or has control characters",
            )
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
        if batch.model_name not in self.models:
            raise Rejected(
                "unknown_model",
                f"StepBatch.model_name {batch.model_name!r} is not a model this sidecar serves "
                f"({', '.join(sorted(self.models))}); add vLLM's served name to sidecar.model_names, "
                "or set the plugin's model_name to one of these",
            )
        columns = decode(batch, pack.feature_count)
        if batch.token_scores:
            columns = _checked_token_scores(batch, pack.feature_count, columns)
        for end in batch.ends:
            if not 0 < len(end.request_id) <= MAX_ID_LENGTH:
                raise Rejected("malformed", "RequestEnd.request_id is empty or too long")
            if max(end.prompt_tokens, end.response_tokens, len(end.token_ids)) > MAX_POSITION:
                raise Rejected("out_of_range", f"RequestEnd {end.request_id!r}: a length is above {MAX_POSITION}")
        for entry in batch.policies:
            if not 0 < len(entry.request_id) <= MAX_ID_LENGTH or not 0 < len(entry.policy) <= MAX_POLICY_LENGTH:
                raise Rejected(
                    "malformed",
                    f"RequestPolicy for {entry.request_id[:MAX_ID_LENGTH]!r}: needs a request id and a policy of "
                    f"1 to {MAX_POLICY_LENGTH} characters",
                )
        for unscored in batch.unscored:
            if not 0 < len(unscored.request_id) <= MAX_ID_LENGTH or unscored.reason not in UNSCORED_LABELS:
                raise Rejected(
                    "malformed",
                    f"UnscoredTokens for {unscored.request_id[:MAX_ID_LENGTH]!r}: needs a request id and a known "
                    f"reason ({', '.join(UNSCORED_LABELS.values())}), got reason {unscored.reason}",
                )
            if unscored.count > MAX_POSITION:
                raise Rejected(
                    "out_of_range", f"UnscoredTokens for {unscored.request_id!r}: count above {MAX_POSITION}"
                )
        return columns

    def apply(self, batch: pb.StepBatch, columns: Columns | None = None) -> list[pb.Decision]:
        """Fold a validated batch into request state; returns the decisions it caused."""
        now = self.clock()
        pack = self._compiled.get(batch.pack)
        decisions: list[pb.Decision] = []
        if pack is None or pack.version != batch.pack_version:
            # The pack was reloaded away between validation and now.
            self.metrics.dropped.labels("unknown_pack").inc()
            return decisions
        if columns is None:
            columns = decode(batch, pack.feature_count)
        model = batch.model_name
        produced = batch.produced_unix_nanos
        groups = pack.groups
        scored = dict.fromkeys(SCOPE_LABELS, 0)
        for entry in batch.policies:
            state = self.table.touch(entry.request_id, model, now)
            if state is not None:
                state.policy = entry.policy
        # Per scope: the batch rows, their table rows and owners, folded in one call below.
        pending: dict[int, tuple[list[int], list[int], list[tuple[RequestState, ProbeTracks]]]] = {}
        for row, (request_id, scope, tokens) in enumerate(
            zip(columns.request_ids, columns.scopes.tolist(), columns.num_tokens.tolist(), strict=True)
        ):
            state = self.table.touch(request_id, model, now)
            if state is None:
                continue  # a late row (one more step after EOS): the report is closed
            # Each pack's batch carries the same rows: count a token once, whichever pack's
            # batch brings it first.
            scored[scope] += state.add_tokens(pack.name, scope, tokens)
            group = groups.get(scope)
            if group is None:
                if self.trace_steps:
                    self._trace_other(pack, state, columns, row)
                continue
            tracks = state.tracks_for(pack.name, group, pack.tables[scope])
            batch_rows, table_rows, owners = pending.setdefault(scope, ([], [], []))
            batch_rows.append(row)
            table_rows.append(tracks.row)
            owners.append((state, tracks))
        for scope, (batch_rows, table_rows, owners) in pending.items():
            pick = np.array(batch_rows)
            folded = pack.tables[scope].observe(
                np.array(table_rows),
                columns.first_positions[pick],
                columns.num_tokens[pick],
                columns.max[pick],
                columns.argmax[pick],
                columns.sum[pick],
                columns.count[pick],
            )
            for i, transition in folded:
                state, tracks = owners[i]
                row = batch_rows[i]
                position = int(columns.first_positions[row] + columns.num_tokens[row] - 1)
                decisions.append(self._decide(state, tracks, transition, produced, now, position))
            if self.trace_steps:
                self._trace(pack, scope, pick, table_rows, owners, columns, folded)
        if self.trace_steps and batch.token_scores:
            self._trace_exact(pack, batch)
        for scope, tokens in scored.items():
            if tokens:
                self.metrics.tokens_scored.labels(model, SCOPE_LABELS[scope]).inc(tokens)
        for unscored in batch.unscored:
            state = self.table.touch(unscored.request_id, model, now)
            if state is not None:
                state.unscored[unscored.reason] = state.unscored.get(unscored.reason, 0) + unscored.count
            self.metrics.tokens_unscored.labels(model, UNSCORED_LABELS[unscored.reason]).inc(unscored.count)
        for end in batch.ends:
            state = self.table.touch(end.request_id, model, now)
            if state is not None:
                state.finish_reason = end.finish_reason
                state.prompt_tokens = end.prompt_tokens
                state.response_tokens = end.response_tokens
                if end.token_ids:
                    state.token_ids = list(end.token_ids)
                decisions += self._close(state, now, produced)
        for state in self.table.over_capacity():
            self.metrics.requests_evicted.labels("capacity").inc()
            decisions += self._close(state, now, produced, evicted="capacity")
        self.metrics.requests_active.set(len(self.table.active))
        if produced > 0:
            self.metrics.ingest_latency.observe(max(0.0, now - produced / 1e9))
        return decisions

    def sweep(self) -> list[pb.Decision]:
        """Evict idle requests and expire old reports; call about once a second."""
        now = self.clock()
        decisions = []
        for state in self.table.idle(now, self.settings.request_idle_seconds):
            self.metrics.requests_evicted.labels("idle").inc()
            decisions += self._close(state, now, 0, evicted="idle")
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

    def compact(self, closed: list[RequestState]) -> None:
        """The outlets are done with these: keep only their reports' bytes."""
        for state in closed:
            self.table.compact(state)

    # -- the forensic view's traces ------------------------------------------------------

    def _trace(
        self,
        pack: CompiledPack,
        scope: int,
        pick: np.ndarray,
        table_rows: list[int],
        owners: list[tuple[RequestState, ProbeTracks]],
        columns: Columns,
        folded: list[tuple[int, Transition]],
    ) -> None:
        """Each row's token values and the probes' running scores after this step."""
        group = pack.groups[scope]
        scores = pack.tables[scope].scores(np.array(table_rows))
        counts = columns.num_tokens[pick]
        firsts = columns.first_positions[pick]
        values = token_values(group, columns.sum[pick] / counts[:, None])
        rows = np.concatenate([firsts[:, None], counts[:, None], values, scores], axis=1)
        traces = []
        for i, (state, _) in enumerate(owners):
            trace = state.trace_for(pack.name, pack.version, group, self.trace_steps)
            trace.add_step(rows[i])
            traces.append(trace)
        for i, transition in folded:
            if transition.kind == pb.DECISION_KIND_FIRED:
                traces[i].fired(transition.probe, int(firsts[i] + counts[i] - 1))

    def _trace_other(self, pack: CompiledPack, state: RequestState, columns: Columns, row: int) -> None:
        """Rows of a scope none of the pack's probes read: kept with the other scope's traces."""
        count = int(columns.num_tokens[row])
        means = columns.sum[row] / count
        for group in pack.groups.values():
            trace = state.trace_for(pack.name, pack.version, group, self.trace_steps)
            trace.add_other(int(columns.first_positions[row]), count, means)

    def _trace_exact(self, pack: CompiledPack, batch: pb.StepBatch) -> None:
        """The plugin's per-token prompt rows of sampled requests: kept beside the steps,
        never folded (the summaries already carried these rows)."""
        for entry in batch.token_scores:
            rows = token_rows(entry, pack.feature_count)
            if isinstance(rows, str):
                continue  # refused at validation, counted there
            positions, values = rows
            state = self.table.active.get(entry.request_id)
            if state is None:
                continue
            # every group of the pack: a response probe's page colours the prompt's rows too
            for group in pack.groups.values():
                state.trace_for(pack.name, pack.version, group, self.trace_steps).add_exact(positions, values)

    # -- decisions -----------------------------------------------------------------------

    def _decide(
        self,
        state: RequestState,
        tracks: ProbeTracks,
        transition: Transition,
        produced: int,
        now: float,
        position: int = -1,
    ) -> pb.Decision:
        index, kind = transition.probe, transition.kind
        probe = tracks.group.probes[index]
        action = probe.action_for(state.policy)
        severity = SEVERITY_LABELS[probe.severity]
        if transition.first:
            # The request id as an exemplar (OpenMetrics caps an exemplar's labels at 128
            # characters): Grafana links a flagged-requests panel's point to its request page.
            exemplar = {"request_id": state.request_id} if len(state.request_id) <= MAX_EXEMPLAR_ID else None
            self.metrics.requests_flagged.labels(state.model_name, probe.name, severity).inc(exemplar=exemplar)
            if action == pb.ACTION_ABORT and kind == pb.DECISION_KIND_FIRED:
                # the plugin's worker made the same decision on the same rows and stopped it
                self.metrics.requests_aborted.labels(state.model_name, probe.name).inc()
        self.metrics.decisions.labels(state.model_name, probe.name, severity, KIND_LABELS[kind]).inc()
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
            action=action,
            score=finite(float(tracks.scores()[index])),
            threshold=probe.spec.threshold,
            tokens=tracks.tokens,
            features=tracks.contributions(index),
            decided_unix_nanos=int(now * 1e9),
            produced_unix_nanos=produced,
            position=position,
            policy=state.policy,
        )
        state.record(decision)
        return decision

    def _close(self, state: RequestState, now: float, produced: int, *, evicted: str = "") -> list[pb.Decision]:
        """End a request: the rule judges and resolves its probes; observe final scores,
        keep its report. An ``evicted`` request (reason: idle, capacity) is not judged; if
        it was live (two or more steps) that is counted and said in an UNJUDGED decision."""
        finished = not evicted
        decisions = []
        if evicted and state.live:
            self.metrics.requests_unjudged.labels(state.model_name, evicted).inc()
            unjudged = pb.Decision(
                id=uuid.uuid4().hex,
                kind=pb.DECISION_KIND_UNJUDGED,
                request_id=state.request_id,
                model_name=state.model_name,
                tokens=sum(state.tokens.values()),
                decided_unix_nanos=int(now * 1e9),
                produced_unix_nanos=produced,
                position=-1,
            )
            state.record(unjudged)
            decisions.append(unjudged)
        # Judged at the end: the request's last token, when its end marker said how long it was.
        last = state.prompt_tokens + state.response_tokens - 1 if finished and state.response_tokens else -1
        for (pack, scope), tracks in state.tracks.items():
            for transition in tracks.close(judge=finished):
                decisions.append(self._decide(state, tracks, transition, produced, now, last))
                trace = state.traces.get((pack, scope)) if state.traces else None
                if trace is not None and transition.kind == pb.DECISION_KIND_FIRED:
                    trace.fired(transition.probe, trace.last_position)
        if state.traces:
            if self.keep_all_traces or state.flagged:
                for key, trace in state.traces.items():
                    if key in state.tracks:
                        trace.close(state.tracks[key])
            else:
                state.traces = None
        state.finished = finished
        if finished:
            if any(state.tokens.values()):
                self.metrics.requests_scored.labels(state.model_name).inc()
            for tracks in state.tracks.values():
                if tracks.tokens:
                    for probe, score in zip(tracks.group.probes, tracks.scores().tolist(), strict=True):
                        self.metrics.probe_score.labels(state.model_name, probe.name).observe(finite(score))
        for tracks in state.tracks.values():
            tracks.detach()  # the report keeps its numbers; the live table gets the row back
        self.table.finish(state, now)
        self._closed.append(state)
        return decisions
