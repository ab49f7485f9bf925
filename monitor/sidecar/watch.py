"""The WatchAlerts fan-out: every live subscriber gets the decisions it asked for.

The audit store hands each decision here once it has its event id (at once, from memory,
while Redis is away). A subscriber that falls more than ``sidecar.watch_queue_size``
decisions behind is closed with RESOURCE_EXHAUSTED rather than slowing anyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.store import stream_id

#: Queued after a subscriber's last decision when its stream must end.
CLOSED = object()


@dataclass(eq=False)
class Subscriber:
    probes: frozenset[str]
    min_severity: int
    model_name: str
    queue: asyncio.Queue
    overflowed: bool = False
    #: After a replay: live decisions at or before this stream id were already sent.
    replayed_up_to: tuple[int, int] | None = None

    def wants(self, decision: pb.Decision) -> bool:
        return (
            (not self.probes or decision.probe in self.probes)
            and decision.severity >= self.min_severity
            and (not self.model_name or decision.model_name == self.model_name)
        )

    def fresh(self, decision: pb.Decision) -> bool:
        if self.replayed_up_to is None or not decision.event_id:
            return True
        return stream_id(decision.event_id) > self.replayed_up_to


class WatchHub:
    """The set of live WatchAlerts subscribers."""

    def __init__(self, queue_size: int, listeners: Sequence[Callable[[pb.Decision], None]] = ()) -> None:
        """``listeners`` get every decision too (the forensic list's memory)."""
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.listeners = tuple(listeners)

    def subscribe(self, request: pb.WatchAlertsRequest) -> Subscriber:
        subscriber = Subscriber(
            frozenset(request.probes), request.min_severity, request.model_name, asyncio.Queue(maxsize=self.queue_size)
        )
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, decision: pb.Decision) -> None:
        """Hand one decision to every listener and every subscriber that wants it."""
        for listener in self.listeners:
            listener(decision)
        for subscriber in self.subscribers:
            if subscriber.overflowed or not subscriber.wants(decision):
                continue
            try:
                subscriber.queue.put_nowait(decision)
            except asyncio.QueueFull:
                subscriber.overflowed = True
                close(subscriber)

    def close_all(self) -> None:
        for subscriber in list(self.subscribers):
            close(subscriber)


def close(subscriber: Subscriber) -> None:
    """End a WatchAlerts stream: drop what it has not read and queue the end marker."""
    while not subscriber.queue.empty():
        subscriber.queue.get_nowait()
    subscriber.queue.put_nowait(CLOSED)
