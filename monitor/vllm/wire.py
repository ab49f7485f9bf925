"""What one step ships as: its projection turned into a columnar ``StepBatch``.

The engine thread hands the client a :class:`StepResult` (the plan's segments and the
projection's summaries, possibly still on the GPU); the client's thread calls
:func:`encode` when it is about to send, so the device-to-host copy, the position lookup
and the message building never run on the engine thread. The summaries travel as raw
little-endian arrays (``SummaryColumns``): a handful of ``tobytes`` per step instead of a
protobuf message and four Python lists per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm.batch import Segment


@dataclass(frozen=True)
class StepResult:
    """One step's projection, as it came out of the kernel."""

    step: int
    produced_unix_nanos: int
    segments: list[Segment]  # every segment of the plan, in order
    keep: list[int]  # the segments with scored tokens, the only ones shipped
    positions: np.ndarray  # int64 [T]: row index -> absolute position
    parts: list[tuple[np.ndarray, Any]]  # (pack columns, Summaries [S, F_layer]) per tapped layer
    features: int
    ends: list[pb.RequestEnd]


@dataclass(frozen=True)
class Stream:
    """Who the batches are from: the served model and the pack their columns follow."""

    model_name: str
    pack: str
    pack_version: str

    def encode(self, result: StepResult) -> pb.StepBatch:
        return encode(result, self)


def encode(result: StepResult, stream: Stream) -> pb.StepBatch:
    """The step as the sidecar ingests it."""
    batch = pb.StepBatch(
        model_name=stream.model_name,
        pack=stream.pack,
        pack_version=stream.pack_version,
        step=result.step,
        produced_unix_nanos=result.produced_unix_nanos,
        ends=result.ends,
    )
    if not result.keep:
        return batch
    s, f = len(result.segments), result.features
    maxima = np.empty((s, f), dtype="<f4")
    argmax = np.empty((s, f), dtype="<i8")
    sums = np.empty((s, f), dtype="<f4")
    counts = np.empty((s, f), dtype="<u4")
    for columns, summaries in result.parts:
        rows = summaries.argmax.cpu().numpy()
        maxima[:, columns] = summaries.max.cpu().numpy()
        argmax[:, columns] = np.where(rows >= 0, result.positions[np.clip(rows, 0, None)], -1)
        sums[:, columns] = summaries.sum.cpu().numpy()
        counts[:, columns] = summaries.count.cpu().numpy()
    keep = result.keep
    if len(keep) != s:
        maxima, argmax, sums, counts = maxima[keep], argmax[keep], sums[keep], counts[keep]
    segments = [result.segments[i] for i in keep]
    columns = batch.columns
    columns.request_id.extend([segment.request_id for segment in segments])
    columns.scope.extend([segment.scope for segment in segments])
    columns.first_position.extend([segment.first_position for segment in segments])
    columns.num_tokens.extend([segment.num_tokens for segment in segments])
    columns.max = maxima.tobytes()
    columns.argmax_position = argmax.tobytes()
    columns.sum = sums.tobytes()
    columns.count_above = counts.tobytes()
    return batch
