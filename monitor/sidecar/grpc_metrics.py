"""The standard grpc_server_* metrics (go-grpc-prometheus names) for a grpc.aio server.

Every handler is wrapped so that each RPC counts as started, counts its request and
response messages, and on completion counts as handled with its final status code and
observes its duration.

The final code is the subtle part in grpc.aio (checked against grpcio 1.85):
- ``context.code()`` returns what ``abort()`` or ``set_code()`` set, and None (not OK)
  when neither was called;
- an unhandled exception becomes UNKNOWN (or the code set before it) without updating
  ``code()``, so the wrapper remembers the exception;
- a client cancelling or a deadline passing cancels the handler task, possibly while the
  server itself is writing a message the handler yielded, where the wrapper never sees it;
  ``context.cancelled()`` stays False then. What does tell: ``context.done()`` (the status
  was sent) is False.
So completion is recorded in ``context.add_done_callback``, which grpc.aio runs when the
RPC's task ends on every path, and the code is derived from done(), the remembered
exception and code().
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import Counter, Histogram

from monitor.sidecar.metrics import SidecarMetrics

logger = logging.getLogger(__name__)

#: grpc_type label values by (request_streaming, response_streaming), as go-grpc-prometheus.
GRPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}


@dataclass(frozen=True)
class _Series:
    """One method's label children, resolved once instead of on every call."""

    started: Counter
    received: Counter
    sent: Counter
    seconds: Histogram
    handled: Callable[[str], Counter]
    unary_response: bool


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC in the grpc_server_* metrics of a SidecarMetrics.

    Place it first, before BearerTokenInterceptor, so rejected calls are counted too.
    Handlers must be async (grpc.aio servicers are); a sync handler is passed through
    uncounted, with a warning.
    """

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._metrics = metrics
        self._series: dict[str, _Series] = {}
        self._warned: set[str] = set()

    def initialize(self, service: ServiceDescriptor) -> None:
        """Create every series of ``service``'s methods at 0 so rate() works from the first scrape."""
        for method in service.methods:
            grpc_type = GRPC_TYPES[(method.client_streaming, method.server_streaming)]
            series = self._series_for(f"/{service.full_name}/{method.name}", grpc_type)
            for code in grpc.StatusCode:
                series.handled(code.name)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return None
        kind = (bool(handler.request_streaming), bool(handler.response_streaming))
        behaviour = _behaviour(handler, kind)
        method = handler_call_details.method
        if not _is_async(behaviour):
            if method not in self._warned:
                self._warned.add(method)
                logger.warning("%s has a sync handler; its calls are not counted in grpc_server_*", method)
            return handler
        return _instrumented(handler, kind, behaviour, self._series_for(method, GRPC_TYPES[kind]))

    def _series_for(self, method: str, grpc_type: str) -> _Series:
        series = self._series.get(method)
        if series is None:
            service, _, name = method.lstrip("/").partition("/")
            labels = (grpc_type, service, name)
            m = self._metrics

            def handled(code: str, labels: tuple[str, str, str] = labels) -> Counter:
                return m.grpc_handled.labels(*labels, code)

            series = _Series(
                started=m.grpc_started.labels(*labels),
                received=m.grpc_msg_received.labels(*labels),
                sent=m.grpc_msg_sent.labels(*labels),
                seconds=m.grpc_handling_seconds.labels(*labels),
                handled=handled,
                unary_response=grpc_type in ("unary", "client_stream"),
            )
            self._series[method] = series
        return series


def _behaviour(handler: grpc.RpcMethodHandler, kind: tuple[bool, bool]) -> Any:
    return {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[kind]


def _is_async(behaviour: Any) -> bool:
    return inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)


class _Call:
    """One RPC in flight; ``finish`` runs as the context's done callback."""

    __slots__ = ("error", "series", "start")

    def __init__(self, series: _Series, context: grpc.aio.ServicerContext) -> None:
        self.series = series
        self.start = time.perf_counter()
        self.error: Exception | None = None
        series.started.inc()
        context.add_done_callback(self.finish)

    def finish(self, context: grpc.aio.ServicerContext) -> None:
        code = final_code(context, self.error)
        series = self.series
        if series.unary_response and code is grpc.StatusCode.OK:
            series.sent.inc()
        series.handled(code.name).inc()
        series.seconds.observe(time.perf_counter() - self.start)


def final_code(context: grpc.aio.ServicerContext, error: Exception | None) -> grpc.StatusCode:
    """The status an RPC ended with, from its context once done and the exception its handler raised."""
    if not context.done():
        # No status was sent: the client cancelled, the deadline passed or the server stopped.
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        # grpc.aio sends UNKNOWN for an unhandled exception unless set_code() chose a code.
        return code if code not in (None, grpc.StatusCode.OK) else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK if code is None else code


class _CountingContext:
    """The servicer context, counting the messages of handlers that call read() / write()."""

    def __init__(self, context: grpc.aio.ServicerContext, series: _Series) -> None:
        self._context = context
        self._series = series

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        if message is not grpc.aio.EOF:
            self._series.received.inc()
        return message

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._series.sent.inc()


async def _counted(messages: AsyncIterator[Any], counter: Counter) -> AsyncIterator[Any]:
    async for message in messages:
        counter.inc()
        yield message


def _instrumented(
    handler: grpc.RpcMethodHandler, kind: tuple[bool, bool], behaviour: Any, series: _Series
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour wrapped; the same kind, (de)serializers and calling style."""
    request_streaming, response_streaming = kind
    generator = inspect.isasyncgenfunction(behaviour)
    # Only handlers that may read() or write() get the counting proxy; the rest keep the
    # real context (the proxy is not a grpc.aio.ServicerContext instance).
    proxy = request_streaming or (response_streaming and not generator)

    def requests(request: Any) -> Any:
        if request_streaming:
            return _counted(request, series.received)
        series.received.inc()
        return request

    def servicer_context(context: grpc.aio.ServicerContext) -> Any:
        return _CountingContext(context, series) if proxy else context

    if not response_streaming:

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(series, context)
            try:
                return await behaviour(requests(request), servicer_context(context))
            except Exception as error:
                call.error = error
                raise

        wrapper: Any = unary_response
    elif generator:

        async def response_generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(series, context)
            try:
                responses = behaviour(requests(request), servicer_context(context))
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        yield response
                        # grpc.aio resumes the generator once it has written the message.
                        series.sent.inc()
            except Exception as error:
                call.error = error
                raise

        wrapper = response_generator
    else:  # reader/writer style: the handler writes through the (counting) context

        async def response_writer(request: Any, context: grpc.aio.ServicerContext) -> None:
            call = _Call(series, context)
            try:
                await behaviour(requests(request), servicer_context(context))
            except Exception as error:
                call.error = error
                raise

        wrapper = response_writer

    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[kind]
    return factory(
        wrapper,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
