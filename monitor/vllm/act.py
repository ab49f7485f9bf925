"""Stopping an answer inside vLLM when an ``action: abort`` probe fires.

Where the decision is made: in the worker, right after the step's projection, by the same
rule the sidecar runs (:class:`monitor.probe.TrackTable`) on the same summaries, so the
two agree on when a probe fired; the sidecar being down never stops anything, and nothing
waits for it.

How the request ends: :class:`monitor.vllm.stop.StopFlagged`, a vLLM V1 logits processor (loaded in every
engine through the ``vllm.logits_processors`` entry point; inert until a request is
flagged), forces the request's end-of-sequence token at its next sampled token. vLLM's
``Worker.execute_model`` returns after the forward pass and samples afterwards
(``sample_tokens``), so the token sampled in the very step whose row fired is the EOS: the
answer stops right after the firing token, and the client gets an ordinary, well-formed
response (finish reason ``stop``: the engine's abort path would answer an error or a
truncated stream, and needs a round trip out of the worker). The request's end marker
says ``FINISH_REASON_ABORT`` to the sidecar, whose decision and report carry the position.
A request with ``ignore_eos`` is not stopped by EOS: the processor then keeps forcing EOS
tokens until its length limit (nothing but EOS tokens after the firing one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from monitor.pack import ProbePack
from monitor.probe import ProbeGroup, TrackTable, probe_groups
from monitor.proto.saemon.v1 import monitor_pb2 as pb

if TYPE_CHECKING:
    from monitor.vllm.batch import Segment

#: Worker request ids to end at their next sampled token, and how the processor reads the
#: persistent batch's ids (bound by the worker's monitor at load; one engine per process).
#: Written by the worker's step hook and read by the sampler, both on the engine thread
#: (set membership and updates are atomic under the GIL in any case).
_stopping: set[str] = set()
_batch_ids: Callable[[], Sequence[str | None]] | None = None


def bind(batch_ids: Callable[[], Sequence[str | None]]) -> None:
    """The worker's persistent batch order (``input_batch.req_ids``), for the processor."""
    global _batch_ids
    _batch_ids = batch_ids


def stop(worker_request_id: str) -> None:
    _stopping.add(worker_request_id)


def forget(worker_request_ids: Sequence[str]) -> None:
    _stopping.difference_update(worker_request_ids)


def stopping() -> set[str]:
    """The flagged requests (the live set: read it, do not change it)."""
    return _stopping


def has_stopping() -> bool:
    """Anything to stop, and a batch to find it in."""
    return bool(_stopping) and _batch_ids is not None


def batch_ids() -> Sequence[str | None]:
    return _batch_ids() if _batch_ids is not None else ()


class AbortRule:
    """The packs' ``action: abort`` probes on this worker's requests (response scope)."""

    def __init__(self, packs: Sequence[ProbePack], columns: Sequence[tuple[int, int]]) -> None:
        """``columns``: each pack's (first, width) in the projection's feature columns."""
        #: per pack with probes that may abort: its response group, their state, its columns
        self.parts: list[tuple[ProbeGroup, TrackTable, int, int]] = []
        for pack, (first, width) in zip(packs, columns, strict=True):
            group = probe_groups(pack).get(pb.TOKEN_SCOPE_RESPONSE)
            if group is not None and any(p.may_abort for p in group.probes):
                self.parts.append((group, TrackTable(group, capacity=64), first, width))
        self.rows: dict[tuple[int, str], int] = {}
        #: external id -> the policy its request was sent with (those sent with one)
        self.policies: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.parts)

    def learn(self, policies: Iterable[tuple[str, str]]) -> None:
        """(external id, policy) of requests the planner saw with one for the first time."""
        self.policies.update(policies)

    def observe(
        self, segments: Sequence[Segment], summaries: tuple[np.ndarray, ...], positions: np.ndarray
    ) -> list[tuple[str, str, int]]:
        """Fold a step's response summaries (host arrays [S, F]: max, argmax row, sum, count,
        for ``segments``) in; the (external id, probe, position) of every abort that fired
        (a probe aborts when its action, or the one the request's policy gives it, is abort)."""
        policies = self.policies
        maxima, argmax_rows, sums, counts = summaries
        picked = [i for i, s in enumerate(segments) if s.scope == pb.TOKEN_SCOPE_RESPONSE and s.num_tokens]
        if not picked:
            return []
        fired = []
        pick = np.array(picked)
        ids = [segments[i].request_id for i in picked]
        firsts = np.array([segments[i].first_position for i in picked], dtype=np.int64)
        counts_of = np.array([segments[i].num_tokens for i in picked], dtype=np.int64)
        rows = argmax_rows[pick]
        argmax = np.where(rows >= 0, positions[np.clip(rows, 0, None)], -1)
        for k, (group, table, lo, width) in enumerate(self.parts):
            hi = lo + width
            table_rows = np.array([self._row(k, table, request_id) for request_id in ids])
            transitions = table.observe(
                table_rows,
                firsts,
                counts_of,
                maxima[pick, lo:hi].astype(np.float64),
                argmax[:, lo:hi],
                sums[pick, lo:hi].astype(np.float64),
                counts[pick, lo:hi],
            )
            for i, transition in transitions:
                probe = group.probes[transition.probe]
                action = probe.action_for(policies.get(ids[i], ""))
                if transition.kind == pb.DECISION_KIND_FIRED and action == pb.ACTION_ABORT:
                    fired.append((ids[i], probe.name, int(firsts[i] + counts_of[i] - 1)))
        return fired

    def _row(self, part: int, table: TrackTable, request_id: str) -> int:
        key = (part, request_id)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = table.new_row()
        return row

    def forget(self, external_ids: Sequence[str]) -> None:
        """Finished requests: give their rows back, drop their policies."""
        for request_id in external_ids:
            self.policies.pop(request_id, None)
            for k, (_, table, _, _) in enumerate(self.parts):
                row = self.rows.pop((k, request_id), None)
                if row is not None:
                    table.release(row)
