"""Collect the sidecar's decisions from its WatchAlerts stream on a thread (demo, tests, benchmarks)."""

from __future__ import annotations

import threading

import grpc

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc


class DecisionWatcher:
    """Collects the sidecar's decisions from its WatchAlerts stream on a background thread.

    ``with DecisionWatcher(channel) as watcher: ...`` then read ``watcher.decisions``. Only
    decisions of ``kinds`` are kept (default: firings). The stream ends on stop() or when the
    sidecar goes away; ``error`` then holds the status if it was not a local cancel.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        request: pb.WatchAlertsRequest | None = None,
        kinds: tuple[int, ...] = (pb.DECISION_KIND_FIRED,),
    ) -> None:
        self._call = monitor_pb2_grpc.MonitorServiceStub(channel).WatchAlerts(request or pb.WatchAlertsRequest())
        self._kinds = kinds
        self.decisions: list[pb.Decision] = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._collect, name="saemon-watch", daemon=True)

    def start(self) -> DecisionWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._call.cancel()
        self._thread.join(timeout)

    def _collect(self) -> None:
        try:
            for response in self._call:
                if response.decision.kind in self._kinds:
                    self.decisions.append(response.decision)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def __enter__(self) -> DecisionWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
