"""A real gRPC Ingest endpoint that keeps what the plugin sent, folded per request.

For tests that compare the plugin's output across engines at the level of every feature
(the sidecar keeps only probe scores): per (pack, request, scope) the tokens scored and each
feature's max, the position of the max (the lowest among equal maxima), sum and count."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent import futures

import grpc
import numpy as np

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.scorer import decode


class Folded:
    def __init__(self, features: int) -> None:
        self.tokens = 0
        self.max = np.full(features, -np.inf, np.float32)
        self.argmax = np.full(features, -1, np.int64)
        self.sum = np.zeros(features, np.float64)
        self.count = np.zeros(features, np.int64)

    def add(self, tokens, maxima, argmax, sums, counts) -> None:
        self.tokens += int(tokens)
        better = (maxima > self.max) | ((maxima == self.max) & (argmax < self.argmax))
        self.max = np.where(better, maxima, self.max)
        self.argmax = np.where(better, argmax, self.argmax)
        self.sum += sums
        self.count += counts


class Recorder(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, address: str, features: dict[str, int]) -> None:
        self.address = address
        self.features = features  # by pack name
        self.lock = threading.Lock()
        self.folded: dict[tuple[str, str, int], Folded] = {}
        self.unscored: dict[str, dict[int, int]] = defaultdict(dict)
        self.ended: set[str] = set()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(address)

    def __enter__(self) -> Recorder:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(0)

    def Ingest(self, request_iterator, context):
        accepted = 0
        for request in request_iterator:
            for batch in request.batches:
                columns = decode(batch, self.features[batch.pack])
                with self.lock:
                    for i, rid in enumerate(columns.request_ids):
                        key = (batch.pack, rid, int(columns.scopes[i]))
                        folded = self.folded.get(key)
                        if folded is None:
                            folded = self.folded[key] = Folded(self.features[batch.pack])
                        folded.add(
                            columns.num_tokens[i], columns.max[i], columns.argmax[i], columns.sum[i], columns.count[i]
                        )
                    for lost in batch.unscored:
                        counts = self.unscored[lost.request_id]
                        counts[lost.reason] = counts.get(lost.reason, 0) + lost.count
                    self.ended.update(end.request_id for end in batch.ends)
                accepted += 1
        return pb.IngestResponse(batches_accepted=accepted)

    def wait_for(self, request_ids, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if set(request_ids) <= self.ended:
                    return
            time.sleep(0.05)
        raise AssertionError(f"no end marker for {sorted(set(request_ids) - self.ended)}")

    def of(self, pack: str, request_id: str) -> dict[int, Folded]:
        with self.lock:
            return {scope: f for (p, rid, scope), f in self.folded.items() if p == pack and rid == request_id}
