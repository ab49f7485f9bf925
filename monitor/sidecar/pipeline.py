"""Accepted batches to decisions: the bounded ingest queue, the scoring task, the sweep.

Ingest streams put validated batches here. When the queue is full, ``await put`` stops
reading the stream, so HTTP/2 flow control pushes back on the client, whose own bounded
queue then drops and counts. One task drains the queue into the scorer and hands what it
decides to the outlets; another evicts idle requests and queues incident re-sends once a
second.
"""

from __future__ import annotations

import asyncio
import logging

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.outlets import Outlets
from monitor.sidecar.scorer import Columns, Scorer

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0


class Pipeline:
    def __init__(self, scorer: Scorer, outlets: Outlets, metrics: SidecarMetrics, queue_size: int) -> None:
        self.scorer = scorer
        self.outlets = outlets
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[pb.StepBatch, Columns]] = asyncio.Queue(maxsize=queue_size)
        metrics.queue_capacity.set(queue_size)
        metrics.queue_depth.set_function(self.queue.qsize)
        self._tasks: list[asyncio.Task] = []

    async def put(self, batch: pb.StepBatch, columns: Columns) -> None:
        """Queue a validated batch; waits while the queue is full (backpressure)."""
        await self.queue.put((batch, columns))

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._score(), name="saemon-score"),
            asyncio.create_task(self._sweep(), name="saemon-sweep"),
        ]

    async def stop(self) -> None:
        """Score what is queued, then stop the tasks."""
        await self.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def drain(self) -> None:
        """Score everything queued so far (before a report, at shutdown)."""
        while not self.queue.empty():
            self._apply(*self.queue.get_nowait())
            self.queue.task_done()

    async def _score(self) -> None:
        while True:
            batch, columns = await self.queue.get()
            self._apply(batch, columns)
            self.queue.task_done()

    def _apply(self, batch: pb.StepBatch, columns: Columns) -> None:
        try:
            decisions = self.scorer.apply(batch, columns)
        except Exception:  # a bug must not stop scoring: count, log with context, go on
            self.metrics.dropped.labels("malformed").inc()
            log.exception("failed to score step %d of %s", batch.step, batch.model_name)
            return
        self._publish(decisions)

    def _publish(self, decisions: list[pb.Decision]) -> None:
        """Decisions and the requests they closed to the outlets; then the closed requests
        are kept as their reports' bytes."""
        closed = self.scorer.drain_closed()
        self.outlets.publish(decisions, closed)
        self.scorer.compact(closed)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self._publish(self.scorer.sweep())
            self.outlets.expire_restored(
                lambda request_id: request_id in self.scorer.table.active, self.scorer.settings.request_idle_seconds
            )
            self.outlets.resend_due()
