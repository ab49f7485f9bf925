"""The audit trail in Redis: decision events, request reports, alert notifications.

Keys (the ``{model}`` hash tag keeps one model's keys in one Redis Cluster slot):

    <prefix>:{<model>}:events         stream, every decision (XADD MAXLEN ~ or MINID ~)
    <prefix>:{<model>}:alerts         stream, notifications to deliver; a consumer group
                                      per receiver (monitor.sidecar.delivery)
    <prefix>:{<model>}:dead_letter    stream, notifications a receiver never accepted
    <prefix>:{<model>}:report:<id>    string, the finished request's report (JSON), TTL
    <prefix>:{<model>}:tokens:<id>    string, text of the tokens that fired (opt-in), own TTL
    <prefix>:{<model>}:trace:<id>     string, per-token scores for the forensic view (JSON), report TTL
    <prefix>:{<model>}:pieces:<id>    string, the request's tokens as redacted text (opt-in), text TTL
    <prefix>:{<model>}:dedup:...      delivery claims per receiver and incident (SET NX PX)

Every write goes through one ordered in-memory backlog that one task drains with
pipelines. While Redis is unreachable the backlog holds (bounded; the oldest are dropped
and counted), ``saemon_redis_up`` is 0, live consumers are served from memory (WatchAlerts
gets the decision at once, alert notifications go to the receivers directly), and when
Redis returns the backlog is written in order, alerts marked with the receivers that
already delivered them so nobody is notified twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from google.protobuf import json_format
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.config import RedisSettings, read_secret
from monitor.errors import ConfigError, DependencyError
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.alerts import Notification
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.token_text import apply_texts

log = logging.getLogger(__name__)

#: Errors that mean "Redis is not reachable right now" (as opposed to a bad command).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
WRITE_BATCH = 256
STATS_SECONDS = 5.0
SENTINEL_CHECK_SECONDS = 1.0
#: Alerts read from a stream at a time.
READ_COUNT = 64
#: Connections beside the receivers' blocking readers: the writer, the stats loop, queries.
RESERVED_CONNECTIONS = 3
#: Fields a dead-letter record adds to the notification's own (see Delivery).
_DEAD_LETTER_ONLY = frozenset({"receiver", "reason", "detail", "entry_id", "dead_lettered_at", "only_for"})


def _wrong_server(exc: BaseException) -> bool:
    """A demoted master, or one cut off from its replicas (min-replicas-to-write): not a bad
    command but the wrong server for now: reconnect and send it again, like an outage."""
    return str(exc).startswith(("READONLY", "NOREPLICAS"))


class StoreUnavailable(Exception):
    """Redis is not configured or not reachable; the caller falls back to memory."""


def group_name(receiver: str) -> str:
    """The consumer group of one receiver on an alerts stream."""
    return f"deliver:{receiver}"


@dataclass(frozen=True)
class Keys:
    prefix: str

    def _base(self, model: str) -> str:
        # Braces inside the model name would move the hash tag: keep the tag well-formed.
        return f"{self.prefix}:{{{model.replace('{', '(').replace('}', ')')}}}"

    def events(self, model: str) -> str:
        return f"{self._base(model)}:events"

    def alerts(self, model: str) -> str:
        return f"{self._base(model)}:alerts"

    def dead_letter(self, model: str) -> str:
        return f"{self._base(model)}:dead_letter"

    def incidents(self, model: str) -> str:
        return f"{self._base(model)}:incidents"

    def incident_requests(self, model: str) -> str:
        return f"{self._base(model)}:incident_requests"

    def report(self, model: str, request_id: str) -> str:
        return f"{self._base(model)}:report:{request_id}"

    def tokens(self, model: str, request_id: str) -> str:
        return f"{self._base(model)}:tokens:{request_id}"

    def trace(self, model: str, request_id: str) -> str:
        return f"{self._base(model)}:trace:{request_id}"

    def pieces(self, model: str, request_id: str) -> str:
        return f"{self._base(model)}:pieces:{request_id}"

    def dedup(self, model: str, receiver: str, notification: Notification) -> str:
        return (
            f"{self._base(model)}:dedup:{receiver}:{notification.fingerprint}:"
            f"{notification.status}:{notification.starts_at}"
        )


@dataclass(eq=False)
class Pending:
    """One write waiting for Redis, and what live consumers did with it meanwhile."""

    kind: str  # event | report | alert | dead_letter | dedup | token_text | trace | pieces
    model: str
    payload: Any
    #: Handed to live consumers already (WatchAlerts, direct delivery), so not again.
    released: bool = False
    #: Alerts: receivers that delivered it from memory, and those sending it right now.
    done: set[str] = field(default_factory=set)
    inflight: set[str] = field(default_factory=set)
    #: Alerts: written to Redis, so the consumer groups own what is left to deliver.
    flushed: bool = False


@dataclass(frozen=True)
class QueuedAlert:
    """A notification read from a receiver's consumer group."""

    entry_id: str
    notification: Notification
    model: str = ""
    """The model whose alerts stream holds the entry."""
    delivered_to: frozenset[str] = frozenset()
    """Receivers that delivered it from memory while Redis was away."""
    times_delivered: int = 1
    """How often the group handed it out (a crash loop shows as a large count)."""
    only_for: str = ""
    """A redriven dead letter: the one receiver it is for (the others acknowledge it)."""
    delivery_id: str = ""
    """A redriven dead letter: the delivery id it was first sent with (X-Saemon-Delivery)."""


@dataclass(frozen=True)
class AlertRead:
    alerts: list[QueuedAlert]
    malformed: list[tuple[str, str, dict[str, str], str]]
    """Entries that are not notifications: (model, entry id, fields, why)."""

    def __add__(self, other: AlertRead) -> AlertRead:
        return AlertRead(self.alerts + other.alerts, self.malformed + other.malformed)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.malformed)


def decision_fields(decision: pb.Decision) -> dict[str, str]:
    """A decision as stream fields: the common ones flat (for redis-cli), all of it as JSON."""
    return {
        "id": decision.id,
        "kind": pb.DecisionKind.Name(decision.kind),
        "request_id": decision.request_id,
        "probe": decision.probe,
        "severity": pb.Severity.Name(decision.severity),
        "score": repr(decision.score),
        "decided_unix_nanos": str(decision.decided_unix_nanos),
        "decision": json_format.MessageToJson(decision, indent=None),
    }


def decision_from_fields(event_id: str, fields: dict[str, str]) -> pb.Decision:
    decision = json_format.Parse(fields["decision"], pb.Decision())
    decision.event_id = event_id
    return decision


def stream_id(value: str) -> tuple[int, int]:
    """'1700000000000-3' -> (1700000000000, 3), for ordering; ValueError when malformed."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class AuditStore:
    """The Redis connection, the backlog and its writer, reads for reports and replays."""

    def __init__(
        self,
        settings: RedisSettings,
        metrics: SidecarMetrics,
        receivers: Iterable[str] = (),
        on_event: Callable[[pb.Decision], None] = lambda decision: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_event`` gets each decision once it has its event id (or at once, from
        memory, while Redis is away): the WatchAlerts fan-out."""
        self.settings = settings
        self.metrics = metrics
        self.receivers = tuple(receivers)
        self.clock = clock
        self.keys = Keys(settings.key_prefix)
        self.enabled = settings.url is not None or bool(settings.sentinels)
        self.redis: aioredis.Redis | None = None
        self.up = False
        self.last_error = ""
        #: Models written for (or configured): whose streams to watch, replay and measure.
        self.models: set[str] = set()
        self.on_event = on_event
        #: Per receiver, alerts to deliver from memory (no Redis to queue them in).
        self.memory_alerts: dict[str, asyncio.Queue[Pending]] = {r: asyncio.Queue() for r in self.receivers}
        self._backlog: deque[Pending] = deque()
        self._writing = 0  # entries taken from the backlog whose write has not answered yet
        self._wake = asyncio.Event()
        self._up_event = asyncio.Event()
        self._groups_ready: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._password = read_secret(settings.password_file, "redis.password_file")
        self._sentinel: Any = None
        needed = len(self.receivers) + RESERVED_CONNECTIONS
        if self.enabled and settings.max_connections < needed:
            raise ConfigError(
                f"redis.max_connections {settings.max_connections} is below what the sidecar needs: one "
                f"blocking reader per alert receiver ({len(self.receivers)}) + {RESERVED_CONNECTIONS} for "
                f"the writer, the stats loop and queries; set it to {needed} or more"
            )
        metrics.redis_backlog_capacity.set(settings.backlog_size)
        metrics.redis_backlog.set_function(lambda: len(self._backlog))
        metrics.redis_up.set(0)
        if not self.enabled:
            # No Redis configured: no saemon_redis_up series, so "Redis down" never alerts.
            metrics.registry.unregister(metrics.redis_up)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        self.redis = self._client()
        await self._connect()
        if not self.up:
            log.warning(
                "Redis at %s is not reachable (%s); scoring and alerting go on from memory "
                "and the audit trail is buffered (up to %d writes) until it is",
                self._where(),
                self.last_error,
                self.settings.backlog_size,
            )
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="saemon-redis-writer"),
            asyncio.create_task(self._stats_loop(), name="saemon-redis-stats"),
        ]
        if self._sentinel is not None:
            self._tasks.append(asyncio.create_task(self._follow_master(), name="saemon-redis-sentinel"))

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Write what is buffered (bounded wait), then close."""
        if not self.enabled:
            return
        deadline = time.monotonic() + flush_timeout
        while (self._backlog or self._writing) and self.up and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.01)
        if self._backlog:
            log.warning(
                "stopping with %d audit writes not in Redis (Redis %s)", len(self._backlog), "up" if self.up else "down"
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    def _client(self) -> aioredis.Redis:
        cfg = self.settings
        url = cfg.url or ""
        kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": cfg.timeout_seconds,
            "socket_connect_timeout": cfg.timeout_seconds,
            "retry_on_timeout": False,
        }
        if cfg.username is not None:
            kwargs["username"] = cfg.username
        if self._password is not None:
            kwargs["password"] = self._password
        if url.startswith("rediss://"):
            kwargs["ssl_cert_reqs"] = "required"
            if cfg.tls.client_ca_file is not None:
                kwargs["ssl_ca_certs"] = str(cfg.tls.client_ca_file)
            if cfg.tls.cert_file is not None:
                kwargs["ssl_certfile"] = str(cfg.tls.cert_file)
            if cfg.tls.key_file is not None:
                kwargs["ssl_keyfile"] = str(cfg.tls.key_file)
        elif cfg.tls.cert_file or cfg.tls.client_ca_file:
            raise ConfigError(f"redis.tls is set but redis.url {url!r} is not rediss://: use rediss:// for TLS")
        if cfg.sentinels:
            from redis.asyncio.sentinel import Sentinel

            sentinel = self._sentinel = Sentinel(
                [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in cfg.sentinels],
                socket_timeout=cfg.timeout_seconds,
                socket_connect_timeout=cfg.timeout_seconds,
            )
            # The pool asks the sentinels for the master at each new connection; a connection
            # to a master demoted by a failover fails (ConnectionError: the store reconnects).
            return sentinel.master_for(cfg.sentinel_service, db=cfg.db, max_connections=cfg.max_connections, **kwargs)
        try:
            # A blocking pool: a caller beyond max_connections waits for a free connection
            # (up to the command timeout) instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=cfg.max_connections, timeout=cfg.timeout_seconds, **kwargs
            )
            return aioredis.Redis.from_pool(pool)
        except ValueError as exc:
            raise ConfigError(
                f"redis.url {url!r}: {exc}. Use redis://host:port/db, rediss://host:port/db or unix:///path.sock"
            ) from None

    def _where(self) -> str:
        if self.settings.sentinels:
            return f"sentinel {self.settings.sentinel_service} via {', '.join(self.settings.sentinels)}"
        url = self.settings.url or ""
        return url.split("@")[-1]  # never log a password given in the URL

    async def _connect(self) -> None:
        assert self.redis is not None
        try:
            await self.redis.ping()
        except UNREACHABLE as exc:
            self.last_error = str(exc) or type(exc).__name__
            self._set_down()
            return
        except RedisError as exc:  # wrong password, ACL: not transient, but keep serving
            self.metrics.redis_errors.labels("write").inc()
            log.error("Redis at %s refused us: %s (check redis.username / redis.password_file)", self._where(), exc)
            self._set_down()
            return
        if not self.up:
            if self._backlog:
                log.info("Redis at %s is up; writing %d buffered audit entries", self._where(), len(self._backlog))
            self.up = True
            self.metrics.redis_up.set(1)
            self._up_event.set()
            self._groups_ready.clear()  # Redis may have restarted empty

    def _set_down(self) -> None:
        if self.up:
            log.warning(
                "lost Redis at %s; buffering audit writes (%d waiting), serving from memory",
                self._where(),
                len(self._backlog),
            )
        self.up = False
        self.metrics.redis_up.set(0)
        self._up_event.clear()
        for item in self._backlog:
            self._release(item)

    def unreachable(self, operation: str) -> None:
        """A reader (delivery, queries) found Redis unreachable: count it, go to memory mode."""
        self.metrics.redis_errors.labels(operation).inc()
        self._set_down()
        self._wake.set()

    async def wait_up(self) -> None:
        await self._up_event.wait()

    # -- appends (never block, never raise) ---------------------------------------------

    def append_event(self, decision: pb.Decision) -> None:
        self.models.add(decision.model_name)
        self._append(Pending("event", decision.model_name, decision))

    def append_report(self, report: pb.RequestReport) -> None:
        if self.enabled:
            self._append(Pending("report", report.model_name, report))

    def append_alert(self, notification: Notification) -> None:
        self.models.add(notification.model_name)
        self._append(Pending("alert", notification.model_name, notification))

    def append_token_text(self, model: str, request_id: str, texts: dict[str, dict[str, str]]) -> None:
        if self.enabled:
            self._append(Pending("token_text", model, (request_id, json.dumps(texts, ensure_ascii=False))))

    def append_trace(self, model: str, request_id: str, trace: dict[str, Any]) -> None:
        """A request's per-token scores for the forensic view, with the report's TTL."""
        if self.enabled:
            self._append(Pending("trace", model, (request_id, json.dumps(trace, separators=(",", ":")))))

    def append_pieces(self, model: str, request_id: str, pieces: list[str]) -> None:
        """A request's tokens as redacted text (token text storage on), with the text's TTL."""
        if self.enabled:
            self._append(Pending("pieces", model, (request_id, json.dumps(pieces, ensure_ascii=False))))

    def append_dead_letter(self, model: str, fields: dict[str, str]) -> None:
        if self.enabled:
            self._append(Pending("dead_letter", model, fields))

    def remember_delivery(self, receiver: str, notification: Notification, entry_id: str, ttl_ms: int) -> None:
        """A notification delivered from memory, to be known in Redis once it is back (so the
        consumer group does not notify the incident again)."""
        if self.enabled:
            key = self.keys.dedup(notification.model_name, receiver, notification)
            self._append(Pending("dedup", notification.model_name, (key, f"sent:{entry_id}", ttl_ms, time.monotonic())))

    def save_incident(self, fingerprint: str, model: str, saved: str | None) -> None:
        """An open incident's own fields as they are now (None: it ended), so a restarted
        sidecar resolves it."""
        if self.enabled:
            self._append(Pending("incident", model, (fingerprint, saved)))

    def save_incident_member(self, fingerprint: str, model: str, request_id: str, joined: bool) -> None:
        """A request joined (or left) an open incident: one hash field, not the incident again."""
        if self.enabled:
            self._append(Pending("incident_member", model, (f"{fingerprint}:{request_id}", joined)))

    async def load_incidents(self) -> tuple[dict[str, str], dict[str, set[str]]]:
        """Every model's open incidents as the previous run left them: fingerprint -> JSON,
        and fingerprint -> the requests still in it."""
        saved: dict[str, str] = {}
        members: dict[str, set[str]] = {}
        async with self._redis_for("read") as redis:
            for pattern, into in ((self.keys.incidents("*"), None), (self.keys.incident_requests("*"), members)):
                keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
                for key in sorted(keys):
                    fields = cast(dict[str, str], await redis.hgetall(key))
                    if into is None:
                        saved.update(fields)
                        continue
                    for field_name in fields:
                        fingerprint, _, request_id = field_name.partition(":")  # hex: no colon
                        into.setdefault(fingerprint, set()).add(request_id)
        return saved, members

    def _append(self, item: Pending) -> None:
        if not self.enabled:
            self._release(item)
            return
        if not self.up:
            self._release(item)
        self._backlog.append(item)
        while len(self._backlog) > self.settings.backlog_size:
            dropped = self._backlog.popleft()
            self.metrics.redis_backlog_dropped.labels(dropped.kind).inc()
        self._wake.set()

    def _release(self, item: Pending) -> None:
        """Serve ``item`` to live consumers from memory (once)."""
        if item.released:
            return
        item.released = True
        if item.kind == "event":
            self.on_event(item.payload)
        elif item.kind == "alert":
            for queue in self.memory_alerts.values():
                queue.put_nowait(item)

    # -- the writer ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            if not self.up:
                await self._connect()
                if not self.up:
                    await asyncio.sleep(self.settings.reconnect_seconds)
                    continue
            if not self._backlog:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            if not batch:  # the oldest alert is being delivered from memory: let it finish
                await asyncio.sleep(0.02)
                continue
            self._writing = len(batch)
            try:
                await self._write(batch)
            except UNREACHABLE:
                self._backlog.extendleft(reversed(batch))
                self.metrics.redis_errors.labels("write").inc()
                self._set_down()
            except Exception:  # a bug must not stop the writer: count, log, drop the batch
                self.metrics.redis_errors.labels("write").inc()
                log.exception("failed to write %d audit entries; dropped", len(batch))
            finally:
                self._writing = 0

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        while self._backlog and len(batch) < WRITE_BATCH:
            item = self._backlog[0]
            if item.kind == "alert" and item.inflight:
                break
            batch.append(self._backlog.popleft())
        return batch

    async def _write(self, batch: list[Pending]) -> None:
        assert self.redis is not None
        for model in {i.model for i in batch if i.kind == "alert"}:
            await self.ensure_groups(model)
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        for item in batch:
            self._command(pipe, item, now)
        results = await pipe.execute(raise_on_error=False)
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, UNREACHABLE):
                raise result
            if isinstance(result, ResponseError) and _wrong_server(result):
                raise RedisConnectionError(str(result))
            if isinstance(result, Exception):
                self.metrics.redis_errors.labels("write").inc()
                log.error("Redis refused a %s write for %s: %s", item.kind, item.model, result)
                continue
            if item.kind == "event":
                item.payload.event_id = result
                self._release(item)
            elif item.kind == "alert":
                item.flushed = True

    def _command(self, pipe: Any, item: Pending, now: float) -> None:
        cfg, keys = self.settings, self.keys
        if item.kind in ("event", "alert", "dead_letter"):
            if item.kind == "event":
                key, fields = keys.events(item.model), decision_fields(item.payload)
            elif item.kind == "alert":
                key, fields = keys.alerts(item.model), item.payload.to_fields()
                if item.done:
                    fields["delivered_to"] = ",".join(sorted(item.done))
            else:
                key, fields = keys.dead_letter(item.model), item.payload
            if cfg.events_retention_seconds is not None:
                minid = f"{int((now - cfg.events_retention_seconds) * 1000)}-0"
                pipe.xadd(key, fields, minid=minid, approximate=True)
            else:
                pipe.xadd(key, fields, maxlen=cfg.events_maxlen, approximate=True)
        elif item.kind == "report":
            report = item.payload
            pipe.set(
                keys.report(item.model, report.request_id),
                json_format.MessageToJson(report, indent=None),
                ex=cfg.report_ttl_seconds,
            )
        elif item.kind == "token_text":
            request_id, text = item.payload
            pipe.set(keys.tokens(item.model, request_id), text, ex=cfg.token_text_ttl_seconds)
        elif item.kind == "trace":
            request_id, text = item.payload
            pipe.set(keys.trace(item.model, request_id), text, ex=cfg.report_ttl_seconds)
        elif item.kind == "pieces":
            request_id, text = item.payload
            pipe.set(keys.pieces(item.model, request_id), text, ex=cfg.token_text_ttl_seconds)
        elif item.kind in ("incident", "incident_member"):
            field_name, value = item.payload
            key = keys.incidents(item.model) if item.kind == "incident" else keys.incident_requests(item.model)
            if value is None or value is False:
                pipe.hdel(key, field_name)
            else:
                pipe.hset(key, field_name, "1" if value is True else value)
        elif item.kind == "dedup":
            key, value, ttl_ms, made = item.payload
            left = ttl_ms - int((time.monotonic() - made) * 1000)
            pipe.set(key, value, nx=True, px=max(left, 1))
        else:
            raise ValueError(f"unknown audit write kind {item.kind!r}")

    async def ensure_groups(self, model: str) -> None:
        """Create every receiver's consumer group on the model's alerts stream (from now on:
        a receiver added later does not replay history). Idempotent."""
        assert self.redis is not None
        if model in self._groups_ready:
            return
        for receiver in self.receivers:
            try:
                await self.redis.xgroup_create(self.keys.alerts(model), group_name(receiver), id="$", mkstream=True)
            except ResponseError as exc:
                if _wrong_server(exc):
                    raise RedisConnectionError(str(exc)) from None
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready.add(model)

    # -- the alert queue: what delivery reads, claims, acknowledges, dead-letters ----------
    #
    # One consumer group per receiver on each model's alerts stream. Every method raises
    # StoreUnavailable (after switching the store to memory mode) when Redis is unreachable.

    async def pending_alerts(self, receiver: str, models: Sequence[str], consumer: str) -> AlertRead:
        """What ``consumer`` read but did not acknowledge (before a restart or an outage)."""
        return await self._read_alerts(receiver, models, consumer, "0", None, counted=True)

    async def new_alerts(self, receiver: str, models: Sequence[str], consumer: str, block_ms: int | None) -> AlertRead:
        """Alerts no consumer of the receiver has read yet, on any of the models' streams,
        waiting up to ``block_ms``: one blocking read (one connection) per receiver, however
        many models there are."""
        return await self._read_alerts(receiver, models, consumer, ">", block_ms, counted=False)

    async def stale_alerts(self, receiver: str, models: Sequence[str], consumer: str, idle_seconds: float) -> AlertRead:
        """Entries other consumers left pending longer than ``idle_seconds``, taken over."""
        read = AlertRead([], [])
        async with self._redis_for("deliver") as redis:
            for model in models:
                await self.ensure_groups(model)
                claimed = await redis.xautoclaim(
                    self.keys.alerts(model),
                    group_name(receiver),
                    consumer,
                    int(idle_seconds * 1000),
                    "0-0",
                    count=READ_COUNT,
                )
                entries = [(i, f) for i, f in claimed[1] if f]
                read = read + await self._parse_alerts(redis, receiver, model, entries, counted=True)
        return read

    async def _read_alerts(
        self, receiver: str, models: Sequence[str], consumer: str, start: str, block_ms: int | None, *, counted: bool
    ) -> AlertRead:
        if not models:
            return AlertRead([], [])
        async with self._redis_for("deliver") as redis:
            for model in models:
                await self.ensure_groups(model)
            by_key = {self.keys.alerts(model): model for model in models}
            # RESP2: [[stream, [(id, fields), ...]], ...], or None when the block times out (the
            # stub also allows RESP3's dict and no None); an entry trimmed away while pending has
            # no fields.
            reply = cast(
                list[list[Any]] | None,
                await redis.xreadgroup(
                    group_name(receiver),
                    consumer,
                    dict.fromkeys(by_key, start),
                    count=READ_COUNT,
                    block=block_ms,
                ),
            )
            read = AlertRead([], [])
            for key, items in reply or []:
                entries = [(i, f) for i, f in items if f]
                read = read + await self._parse_alerts(redis, receiver, by_key[key], entries, counted=counted)
            return read

    async def _parse_alerts(self, redis: Any, receiver: str, model: str, entries: list, *, counted: bool) -> AlertRead:
        counts: dict[str, int] = {}
        if counted and entries:
            ids = [i for i, _ in entries]
            pending = await redis.xpending_range(
                self.keys.alerts(model), group_name(receiver), min=ids[0], max=ids[-1], count=len(ids) * 4
            )
            counts = {p["message_id"]: p["times_delivered"] for p in pending}
        alerts, malformed = [], []
        for entry_id, fields in entries:
            try:
                notification = Notification.from_fields(fields)
            except (KeyError, ValueError) as exc:
                malformed.append((model, entry_id, fields, str(exc)))
                continue
            delivered_to = frozenset(filter(None, fields.get("delivered_to", "").split(",")))
            alerts.append(
                QueuedAlert(
                    entry_id,
                    notification,
                    model,
                    delivered_to,
                    counts.get(entry_id, 1),
                    only_for=fields.get("only_for", ""),
                    delivery_id=fields.get("delivery_id", ""),
                )
            )
        return AlertRead(alerts, malformed)

    async def claim_delivery(self, receiver: str, alert: QueuedAlert, ttl_ms: int) -> bool:
        """Claim the right to notify ``receiver`` of this incident and status (SET NX PX).

        True for a fresh claim, and for a claim this same entry made before a restart (it
        stopped mid-send: send again, at least once); False when the incident was already
        notified through another entry or from memory (a duplicate)."""
        key = self.keys.dedup(alert.notification.model_name, receiver, alert.notification)
        mine = f"claimed:{alert.entry_id}"
        async with self._redis_for("deliver") as redis:
            if await redis.set(key, mine, nx=True, px=ttl_ms):
                return True
            return await redis.get(key) == mine

    async def acknowledge(self, receiver: str, model: str, entry_ids: Sequence[str]) -> None:
        """Done with these entries without sending (already delivered, not wanted, duplicates)."""
        if entry_ids:
            async with self._redis_for("deliver") as redis:
                await redis.xack(self.keys.alerts(model), group_name(receiver), *entry_ids)

    async def delivered(self, receiver: str, model: str, alerts: Sequence[QueuedAlert]) -> None:
        """The receiver accepted these: mark their claims sent, then acknowledge them.

        One round trip but not one transaction: if the ack fails (or we die before it), the
        mark alone stops a second notification when the entry is handed out again."""
        async with self._redis_for("deliver") as redis:
            pipe = redis.pipeline(transaction=False)
            for alert in alerts:
                key = self.keys.dedup(model, receiver, alert.notification)
                pipe.set(key, f"sent:{alert.entry_id}", xx=True, keepttl=True)
            pipe.xack(self.keys.alerts(model), group_name(receiver), *(a.entry_id for a in alerts))
            await pipe.execute()

    async def release_claims(self, receiver: str, model: str, alerts: Sequence[QueuedAlert]) -> None:
        """Forget the claims of alerts that were not delivered: a later re-send may try again."""
        async with self._redis_for("deliver") as redis:
            await redis.delete(*(self.keys.dedup(model, receiver, a.notification) for a in alerts))

    async def dead_letter(self, receiver: str, model: str, entry_id: str, record: dict[str, str]) -> None:
        """Move an entry the receiver will never accept to the dead-letter stream (one transaction)."""
        async with self._redis_for("deliver") as redis:
            pipe = redis.pipeline(transaction=True)
            # The ignore: redis-py's stub types the fields as an invariant Dict[FieldT, EncodableT], which
            # refuses a dict[str, str]; xadd only reads them and accepts any mapping of str to str.
            pipe.xadd(self.keys.dead_letter(model), record, maxlen=self.settings.events_maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.xack(self.keys.alerts(model), group_name(receiver), entry_id)
            await pipe.execute()

    async def redrive(self, receiver: str | None = None, model: str | None = None) -> list[tuple[str, str, str]]:
        """Queue the dead letters again (of one receiver and model, or all): each goes back
        on its model's alerts stream for its receiver only, with the delivery id it was first
        sent with, and leaves the dead-letter stream in the same transaction. The claim
        still applies: an incident notified meanwhile is not notified again. Returns
        (model, receiver, first delivery id) of each."""
        moved: list[tuple[str, str, str]] = []
        async with self._redis_for("deliver") as redis:
            pattern = self.keys.dead_letter(model) if model else self.keys.dead_letter("*")
            keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
            for key in sorted(keys):
                # decode_responses: ids and fields are str (the stub allows bytes and None)
                entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(key))
                for entry_id, record in entries:
                    target, stream_model = record.get("receiver", ""), record.get("model_name", "")
                    if not target or not stream_model or (receiver and target != receiver):
                        continue
                    first = record.get("delivery_id") or record.get("entry_id", entry_id)
                    fields = {k: v for k, v in record.items() if k not in _DEAD_LETTER_ONLY}
                    fields |= {"only_for": target, "delivery_id": first}
                    pipe = redis.pipeline(transaction=True)
                    pipe.xadd(self.keys.alerts(stream_model), fields)  # type: ignore[arg-type]
                    pipe.xdel(key, entry_id)
                    await pipe.execute()
                    moved.append((stream_model, target, first))
        return moved

    @contextlib.asynccontextmanager
    async def _redis_for(self, operation: str) -> AsyncIterator[aioredis.Redis]:
        """The client, with "Redis is unreachable" turned into StoreUnavailable (and memory mode)."""
        if not self.enabled or not self.up or self.redis is None:
            raise StoreUnavailable("no Redis audit store")
        try:
            yield self.redis
        except UNREACHABLE:
            self.unreachable(operation)
            raise StoreUnavailable("Redis is unreachable") from None

    # -- reads ---------------------------------------------------------------------------

    async def get_report(self, request_id: str, models: Iterable[str]) -> pb.RequestReport | None:
        """The stored report of a finished request; StoreUnavailable without Redis."""
        if not self.enabled or not self.up or self.redis is None:
            raise StoreUnavailable("no Redis audit store")
        models = list(models)
        keys = [k for m in models for k in (self.keys.report(m, request_id), self.keys.tokens(m, request_id))]
        try:
            values = await self.redis.mget(keys) if keys else []
        except UNREACHABLE:
            self.unreachable("read")
            raise StoreUnavailable("Redis is unreachable") from None
        for report, texts in zip(values[::2], values[1::2], strict=True):
            if report is not None:
                parsed = json_format.Parse(report, pb.RequestReport())
                if texts is not None:
                    apply_texts(parsed, json.loads(texts))
                return parsed
        return None

    async def get_trace(self, request_id: str, models: Iterable[str]) -> tuple[dict[str, Any] | None, list[str] | None]:
        """A finished request's stored per-token scores and token text (each None when not
        kept or expired); StoreUnavailable without Redis."""
        async with self._redis_for("read") as redis:
            models = list(models)
            keys = [k for m in models for k in (self.keys.trace(m, request_id), self.keys.pieces(m, request_id))]
            values = await redis.mget(keys) if keys else []
        for trace, pieces in zip(values[::2], values[1::2], strict=True):
            if trace is not None or pieces is not None:
                return (json.loads(trace) if trace else None, json.loads(pieces) if pieces else None)
        return None, None

    async def recent_events(self, models: Iterable[str], count: int) -> list[pb.Decision]:
        """The newest ``count`` decisions across models, newest first (XREVRANGE)."""
        entries: list[tuple[tuple[int, int], pb.Decision]] = []
        async with self._redis_for("read") as redis:
            for model in models:
                events = cast(
                    list[tuple[str, dict[str, str]]], await redis.xrevrange(self.keys.events(model), count=count)
                )
                entries += [(stream_id(i), decision_from_fields(i, f)) for i, f in events]
        entries.sort(key=lambda e: e[0], reverse=True)
        return [decision for _, decision in entries[:count]]

    async def replay(self, after_id: str, models: Iterable[str], limit: int = 100_000) -> list[pb.Decision]:
        """Decisions written after ``after_id`` (exclusive), oldest first, across models."""
        if not self.enabled or not self.up or self.redis is None:
            raise StoreUnavailable("no Redis audit store")
        entries: list[tuple[tuple[int, int], pb.Decision]] = []
        try:
            for model in models:
                # decode_responses=True: ids, field names and values are str (the stub allows bytes, and
                # None, which XRANGE never returns: a missing stream is an empty list).
                events = cast(
                    list[tuple[str, dict[str, str]]],
                    await self.redis.xrange(self.keys.events(model), f"({after_id}", "+", count=limit),
                )
                for event_id, fields in events:
                    entries.append((stream_id(event_id), decision_from_fields(event_id, fields)))
        except UNREACHABLE:
            self.unreachable("read")
            raise StoreUnavailable("Redis is unreachable") from None
        entries.sort(key=lambda e: e[0])
        return [decision for _, decision in entries[:limit]]

    # -- gauges --------------------------------------------------------------------------

    async def _follow_master(self) -> None:
        """With Sentinel: once a second, the master's address; when a failover moved it, drop
        every connection (they may still reach the demoted master, which accepts writes until
        Sentinel reconfigures it), so the next command connects to the new one."""
        assert self._sentinel is not None and self.redis is not None
        known = None
        while True:
            await asyncio.sleep(SENTINEL_CHECK_SECONDS)
            try:
                address = await self._sentinel.discover_master(self.settings.sentinel_service)
            except (RedisError, OSError):
                continue  # no sentinel answers: the connections' own errors will tell
            if known is not None and address != known:
                log.warning("Redis Sentinel moved %s to %s:%s; reconnecting", self.settings.sentinel_service, *address)
                await self.redis.connection_pool.disconnect()
            known = address

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_SECONDS)
            if self.up:
                await self.refresh_stats()

    async def refresh_stats(self) -> None:
        """Stream lengths and per-receiver lag and pending counts (XLEN, XINFO GROUPS)."""
        if self.redis is None:
            return
        try:
            for model in sorted(self.models):
                pipe = self.redis.pipeline(transaction=False)
                for stream in ("events", "alerts", "dead_letter"):
                    pipe.xlen(getattr(self.keys, stream)(model))
                for stream, length in zip(("events", "alerts", "dead_letter"), await pipe.execute(), strict=True):
                    self.metrics.stream_length.labels(model, stream).set(length)
                if not self.receivers:
                    continue
                try:
                    groups = await self.redis.xinfo_groups(self.keys.alerts(model))
                except ResponseError:  # no alerts stream yet
                    continue
                for group in groups:
                    name = group["name"]
                    if not name.startswith("deliver:"):
                        continue
                    receiver = name[len("deliver:") :]
                    lag = group.get("lag")
                    self.metrics.consumer_lag.labels(model, receiver).set(lag if lag is not None else 0)
                    self.metrics.consumer_pending.labels(model, receiver).set(group.get("pending", 0))
        except UNREACHABLE:
            self.unreachable("stats")
        except RedisError as exc:
            self.metrics.redis_errors.labels("stats").inc()
            log.warning("reading Redis stream statistics failed: %s", exc)


async def redrive_dead_letters(
    settings: RedisSettings, receiver: str | None = None, model: str | None = None
) -> list[tuple[str, str, str]]:
    """``saemon alerts redrive``: AuditStore.redrive from a short-lived connection (the
    running sidecar's receivers pick the entries up from their consumer groups)."""
    from prometheus_client import CollectorRegistry

    if settings.url is None and not settings.sentinels:
        raise ConfigError("alerts redrive needs redis.url (or redis.sentinels): dead letters are kept in Redis")
    store = AuditStore(settings, SidecarMetrics(CollectorRegistry()))
    store.redis = store._client()
    try:
        await store._connect()
        if not store.up:
            raise DependencyError(f"Redis at {store._where()} is not reachable ({store.last_error or 'refused'})")
        return await store.redrive(receiver, model)
    finally:
        await store.redis.aclose()
