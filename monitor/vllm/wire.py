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

from monitor.kernels import Summaries
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
    summaries: Summaries | None  # [S, F] in pack order (None when only requests ended)
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
    summaries = result.summaries
    if not result.keep or summaries is None:
        return batch
    keep = result.keep
    everything = len(keep) == len(result.segments)

    def host(tensor: Any, dtype: str) -> np.ndarray:
        array = tensor.cpu().numpy()
        return (array if everything else array[keep]).astype(dtype, copy=False)

    rows = host(summaries.argmax, "<i8")
    argmax = np.where(rows >= 0, result.positions[np.clip(rows, 0, None)], -1).astype("<i8", copy=False)
    maxima, sums, counts = host(summaries.max, "<f4"), host(summaries.sum, "<f4"), host(summaries.count, "<u4")
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
