"""Ship per-step summaries to the sidecar without holding up the engine thread.

The engine thread hands over small numpy arrays (a few floats per request and feature); a
background thread turns them into ``StepBatch`` messages and submits them to the sidecar
client, whose own bounded queue and reconnect loop keep a dead sidecar from ever blocking
vLLM. When this hand-over queue is full, the step is dropped and counted in the client, so
the count rides to the sidecar with the next batch it sends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm.batch import Segment
from monitor.vllm.client import SidecarClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    """One step's projection, handed over as it came out of the kernel.

    ``parts`` holds, per tapped layer, the pack columns it fills and its ``Summaries``
    (possibly still on the GPU): turning them into numbers on the host happens on the shipper
    thread, so the engine thread never waits for a device-to-host copy.
    """

    step: int
    produced_unix_nanos: int
    segments: list[Segment]  # every segment of the plan, in order
    keep: list[int]  # the segments with scored tokens, the only ones shipped
    positions: np.ndarray  # int64 [T]: row index -> absolute position
    parts: list[tuple[np.ndarray, Any]]  # (pack columns, Summaries [S, F_layer])
    features: int
    ends: list[pb.RequestEnd]


_STOP = object()


class Shipper:
    def __init__(
        self,
        client: SidecarClient,
        model_name: str,
        pack: str,
        version: str,
        queue_size: int,
        interval_seconds: float = 0.1,
    ) -> None:
        self.client = client
        self.interval = interval_seconds
        self.model_name = model_name
        self.pack = pack
        self.version = version
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="saemon-shipper", daemon=True)

    def start(self) -> None:
        self.client.start()
        self._thread.start()

    def ship(self, result: StepResult) -> None:
        """Never blocks: a full queue drops the step; the drop is reported to the sidecar."""
        try:
            self._queue.put_nowait(result)
        except queue.Full:
            self.client.count_dropped()

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.client.close(max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        # Wake at most once per interval and hand over every step queued since: on CPU
        # serving, each wake-up of this thread (and of the gRPC client's) preempts one of
        # vLLM's core-bound OpenMP threads, which stalls the whole forward pass.
        while True:
            items = [self._queue.get()]
            if items[0] is not _STOP and self.interval > 0:
                time.sleep(self.interval)
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is _STOP:
                    return
                try:
                    self.client.submit(self._batch(item))
                except Exception:  # a bug here must not kill shipping for the worker's lifetime
                    log.exception("saemon: could not build the batch of step %d; dropped", item.step)
                    self.client.count_dropped()

    def _batch(self, result: StepResult) -> pb.StepBatch:
        s, f = len(result.segments), result.features
        maxima = np.full((s, f), -np.inf, dtype=np.float32)
        argmax = np.full((s, f), -1, dtype=np.int64)
        sums = np.zeros((s, f), dtype=np.float32)
        counts = np.zeros((s, f), dtype=np.int64)
        for columns, summaries in result.parts:
            rows = summaries.argmax.cpu().numpy().astype(np.int64)
            maxima[:, columns] = summaries.max.cpu().numpy()
            argmax[:, columns] = np.where(rows >= 0, result.positions[np.clip(rows, 0, None)], -1)
            sums[:, columns] = summaries.sum.cpu().numpy()
            counts[:, columns] = summaries.count.cpu().numpy()
        requests = [
            pb.RequestSummary(
                request_id=result.segments[i].request_id,
                scope=result.segments[i].scope,
                first_position=result.segments[i].first_position,
                num_tokens=result.segments[i].num_tokens,
                max=maxima[i].tolist(),
                argmax_position=argmax[i].tolist(),
                sum=sums[i].tolist(),
                count_above=counts[i].tolist(),
            )
            for i in result.keep
        ]
        return pb.StepBatch(
            model_name=self.model_name,
            pack=self.pack,
            pack_version=self.version,
            step=result.step,
            produced_unix_nanos=result.produced_unix_nanos,
            requests=requests,
            ends=result.ends,
        )
