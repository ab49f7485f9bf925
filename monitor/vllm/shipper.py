"""Ship per-step summaries to the sidecar without holding up the engine thread.

The engine thread hands over small numpy arrays (a few floats per request and feature); a
background thread turns them into ``StepBatch`` messages and submits them to the sidecar
client, whose own bounded queue and reconnect loop keep a dead sidecar from ever blocking
vLLM. When this hand-over queue is full, the step is dropped and counted; the count rides
to the sidecar with the next batch the client sends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.client import SidecarClient
from monitor.vllm.batch import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    step: int
    produced_unix_nanos: int
    segments: list[Segment]  # only segments with scored tokens
    max: np.ndarray  # float32 [S, F]
    argmax_position: np.ndarray  # int64 [S, F]
    sum: np.ndarray  # float32 [S, F]
    count: np.ndarray  # int64 [S, F]
    ends: list[pb.RequestEnd]


_STOP = object()


class Shipper:
    def __init__(self, client: SidecarClient, model_name: str, pack: str, version: str, queue_size: int) -> None:
        self.client = client
        self.model_name = model_name
        self.pack = pack
        self.version = version
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="saemon-shipper", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self.client.start()
        self._thread.start()

    def ship(self, result: StepResult) -> None:
        """Never blocks: a full queue drops the step and counts it."""
        try:
            self._queue.put_nowait(result)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.client.close(max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self.client.submit(self._batch(item))
            except Exception:  # a bug here must not kill shipping for the worker's lifetime
                log.exception("saemon: could not build the batch of step %d; dropped", item.step)
                self.dropped += 1

    def _batch(self, result: StepResult) -> pb.StepBatch:
        requests = [
            pb.RequestSummary(
                request_id=segment.request_id,
                scope=segment.scope,
                first_position=segment.first_position,
                num_tokens=segment.num_tokens,
                max=result.max[i].tolist(),
                argmax_position=result.argmax_position[i].tolist(),
                sum=result.sum[i].tolist(),
                count_above=result.count[i].tolist(),
            )
            for i, segment in enumerate(result.segments)
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
