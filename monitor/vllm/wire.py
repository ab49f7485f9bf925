"""What one step ships as: its projection turned into columnar ``StepBatch`` messages.

The engine thread hands the client a :class:`StepResult` (the plan's segments and the
projection's summaries, possibly still on the GPU); the client's thread calls
:func:`encode` when it is about to send, so the device-to-host copy, the position lookup
and the message building never run on the engine thread. The summaries travel as raw
little-endian arrays (``SummaryColumns``): a handful of ``tobytes`` per step instead of a
protobuf message and four Python lists per request.

With several packs the projection's columns are the packs' features one pack after
another; each pack's range becomes one ``StepBatch`` (the sidecar scores each pack's
probes from its own batch). Per-request facts go once: the unscored counts with the first
pack's batch, the end markers with the last one (so no pack's rows of the step arrive
after the request was closed).

Requests sampled for the forensic view (``plugin.prompt_token_scores``) also get their
prompt rows' per-token feature values (``TokenScores``, one per request and scope in each
pack's batch, with the pack's columns), copied to the host here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from monitor.kernels import Summaries
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm.batch import Segment


@dataclass(frozen=True)
class Stream:
    """Who a batch is from: the served model, and the pack its columns follow (columns
    ``first:first + width`` of the projection)."""

    model_name: str
    pack: str
    pack_version: str
    first: int = 0
    width: int | None = None  # None: every column


@dataclass(frozen=True)
class TokenRows:
    """Per-token feature values of some rows, grouped by request and scope: group ``k``
    (``groups[k]``) is rows ``starts[k]:starts[k + 1]`` of ``scores`` and ``positions``."""

    groups: Sequence[tuple[str, int]]  # (external request id, pb.TOKEN_SCOPE_*)
    starts: Sequence[int]  # [G + 1]
    positions: np.ndarray  # int64 [n], ascending within a group
    scores: torch.Tensor  # float32 [n, F] in the streams' column order, possibly on the GPU


@dataclass(frozen=True)
class StepResult:
    """One step's projection, as it came out of the kernel."""

    step: int
    produced_unix_nanos: int
    segments: list[Segment]  # every segment of the plan, in order
    keep: list[int]  # the segments with scored tokens, the only ones shipped
    positions: np.ndarray  # int64: row index -> absolute position
    summaries: Summaries | None  # [S, F] in the streams' column order (None when only requests ended)
    ends: list[pb.RequestEnd]
    streams: tuple[Stream, ...]
    unscored: list[pb.UnscoredTokens] = field(default_factory=list)
    #: sampled requests' prompt rows (the step's own, then those the score table served)
    token_scores: list[TokenRows] = field(default_factory=list)
    #: (external id, policy) of requests first seen with a policy this step
    policies: list[tuple[str, str]] = field(default_factory=list)


def encode(result: StepResult) -> list[pb.StepBatch]:
    """The step as the sidecar ingests it: one batch per pack."""
    batches = [
        pb.StepBatch(
            model_name=stream.model_name,
            pack=stream.pack,
            pack_version=stream.pack_version,
            step=result.step,
            produced_unix_nanos=result.produced_unix_nanos,
        )
        for stream in result.streams
    ]
    batches[0].unscored.extend(result.unscored)
    batches[-1].ends.extend(result.ends)
    for batch in batches:  # each pack maps policies to actions of its own probes
        for request_id, policy in result.policies:
            batch.policies.add(request_id=request_id, policy=policy)
    if result.token_scores:
        _add_token_scores(batches, result.streams, result.token_scores)
    summaries = result.summaries
    if not result.keep or summaries is None:
        return batches
    keep = result.keep
    everything = len(keep) == len(result.segments)

    def host(tensor: Any, dtype: str) -> np.ndarray:
        array = tensor.cpu().numpy()
        return (array if everything else array[keep]).astype(dtype, copy=False)

    rows = host(summaries.argmax, "<i8")
    argmax = np.where(rows >= 0, result.positions[np.clip(rows, 0, None)], -1).astype("<i8", copy=False)
    maxima, sums, counts = host(summaries.max, "<f4"), host(summaries.sum, "<f4"), host(summaries.count, "<u4")
    segments = [result.segments[i] for i in keep]
    request_ids = [segment.request_id for segment in segments]
    scopes = [segment.scope for segment in segments]
    firsts = [segment.first_position for segment in segments]
    counts_of = [segment.num_tokens for segment in segments]
    for batch, stream in zip(batches, result.streams, strict=True):
        lo = stream.first
        hi = maxima.shape[1] if stream.width is None else lo + stream.width
        columns = batch.columns
        columns.request_id.extend(request_ids)
        columns.scope.extend(scopes)
        columns.first_position.extend(firsts)
        columns.num_tokens.extend(counts_of)
        columns.max = np.ascontiguousarray(maxima[:, lo:hi]).tobytes()
        columns.argmax_position = np.ascontiguousarray(argmax[:, lo:hi]).tobytes()
        columns.sum = np.ascontiguousarray(sums[:, lo:hi]).tobytes()
        columns.count_above = np.ascontiguousarray(counts[:, lo:hi]).tobytes()
    return batches


def _add_token_scores(batches: list[pb.StepBatch], streams: Sequence[Stream], parts: Sequence[TokenRows]) -> None:
    """One ``TokenScores`` per request and scope in each pack's batch; a request's rows from
    several parts (computed this step, served from the score table) merged by position."""
    pieces: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for part in parts:
        values = part.scores.cpu().numpy()
        for k, key in enumerate(part.groups):
            lo, hi = part.starts[k], part.starts[k + 1]
            pieces.setdefault(key, []).append((part.positions[lo:hi], values[lo:hi]))
    for (request_id, scope), found in pieces.items():
        positions = np.concatenate([p for p, _ in found]).astype("<i8", copy=False)
        values = np.concatenate([v for _, v in found]).astype("<f4", copy=False)
        if len(found) > 1:
            order = np.argsort(positions, kind="stable")
            positions, values = positions[order], values[order]
        encoded_positions = positions.tobytes()
        for batch, stream in zip(batches, streams, strict=True):
            lo = stream.first
            hi = values.shape[1] if stream.width is None else lo + stream.width
            batch.token_scores.add(
                request_id=request_id,
                scope=scope,
                positions=encoded_positions,
                values=np.ascontiguousarray(values[:, lo:hi]).tobytes(),
            )
