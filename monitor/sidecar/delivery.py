"""Alert delivery: at least once through Redis consumer groups, once per incident by claims.

Each receiver has a consumer group on every model's alerts stream and one worker that
reads all the models' streams (one blocking ``XREADGROUP`` over every stream, so one
connection per receiver however many models the sidecar serves) and, in a loop:

1. re-reads its own pending entries first (``XREADGROUP ... 0``: what it had read but not
   acknowledged when the sidecar last stopped), then takes over entries other consumers
   left pending longer than ``claim_idle_seconds`` (``XAUTOCLAIM``), then reads new ones
   (``XREADGROUP ... >``, blocking);
2. claims each notification's dedup key ``SET NX PX`` (one key per receiver, incident and
   status; the TTL is the receiver's repeat interval): a key that already says ``sent`` or
   belongs to another entry means this incident was already notified, so the entry is
   acknowledged without sending. A key claimed by this same entry means a previous attempt
   stopped mid-send: it is sent again (at least once);
3. sends (Alertmanager: one POST of all; webhooks: one POST per group after the grouping
   window), retrying 5xx, 429 and timeouts with exponential backoff;
4. after a 2xx marks the keys ``sent`` and then acknowledges (``XACK``): an entry that is
   redelivered after a crash between the two finds ``sent`` and is only acknowledged; if
   Redis went away between the 2xx and that write, the sidecar remembers the entry and,
   when Redis hands it out again, only marks and acknowledges it;
   after a non-retryable 4xx or the last attempt, writes the entry to the dead-letter stream
   and acknowledges it. An entry handed out more than ``max_deliveries`` times (a crash loop)
   is dead-lettered without another try.

Without Redis (not configured, or unreachable) the same steps run from an in-memory queue
with in-memory claims, which are written to Redis when it returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from monitor.config import AlertmanagerReceiver, AlertSettings, Settings, WebhookReceiver, read_secret
from monitor.sidecar.alerts import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Notification,
    sign,
    webhook_payload,
)
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.store import AuditStore, Pending, QueuedAlert, StoreUnavailable

log = logging.getLogger(__name__)

#: Fraction of a receiver's repeat interval a claim lives: a re-send that arrives exactly one
#: interval later must find the claim expired.
CLAIM_TTL_FRACTION = 0.9
#: Delivered entries remembered while their acknowledgement waits for Redis (per sidecar).
MAX_UNCONFIRMED = 10_000


@dataclass(frozen=True)
class Outcome:
    result: str  # success | retry | rejected
    status: int  # HTTP status, 0 for a transport error
    detail: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True)
class Entry:
    """A notification to deliver and where it came from (the alert queue or memory)."""

    entry_id: str
    notification: Notification
    queued: QueuedAlert | None = None  # from the store's alert queue
    item: Pending | None = None  # memory mode


class Receiver(ABC):
    """Where notifications go: how to batch them, send them, and how often to repeat."""

    def __init__(self, name: str, url: str, timeout: float, ca_file) -> None:
        self.name = name
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.ssl: ssl.SSLContext | bool = True
        if ca_file is not None:
            self.ssl = ssl.create_default_context(cafile=str(ca_file))

    group_wait = 0.0

    @property
    @abstractmethod
    def repeat_seconds(self) -> float:
        """How long one incident's claim lasts: no second notification within it."""

    def wants(self, notification: Notification) -> bool:
        return True

    def groups(self, notifications: list[Notification]) -> list[list[Notification]]:
        return [notifications]

    @abstractmethod
    def request(self, notifications: list[Notification], delivery_id: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers to POST."""

    async def send(
        self, session: aiohttp.ClientSession, notifications: list[Notification], delivery_id: str
    ) -> Outcome:
        body, headers = self.request(notifications, delivery_id)
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id, **headers}
        try:
            async with session.post(
                self.url, data=body, headers=headers, timeout=self.timeout, ssl=self.ssl
            ) as response:
                text = (await response.text())[:200]
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome("retry", 0, f"{type(exc).__name__}: {exc}".strip(": "))
        if 200 <= status < 300:
            return Outcome("success", status)
        if status == 429 or status >= 500:
            return Outcome("retry", status, text, retry_after)
        return Outcome("rejected", status, text)


class AlertmanagerPush(Receiver):
    """POST /api/v2/alerts: Alertmanager groups, deduplicates, silences and routes."""

    def __init__(self, cfg: AlertmanagerReceiver, alerts: AlertSettings) -> None:
        super().__init__(cfg.name, cfg.url.rstrip("/") + "/api/v2/alerts", cfg.timeout_seconds, cfg.tls_ca_file)
        self.resend = alerts.resend_interval_seconds
        self.token = read_secret(cfg.bearer_token_file, f"alerts.alertmanagers[{cfg.name}].bearer_token_file")

    @property
    def repeat_seconds(self) -> float:
        return self.resend

    def request(self, notifications: list[Notification], delivery_id: str) -> tuple[bytes, dict[str, str]]:
        now = time.time_ns()
        # Alertmanager forgets a firing alert at endsAt unless it is re-sent: 4 re-send
        # intervals, as Prometheus does, so a dead saemon resolves by itself.
        alerts = [n.alertmanager_alert(now, 4 * self.resend) for n in notifications]
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return json.dumps(alerts).encode(), headers


class Webhook(Receiver):
    """Alertmanager's version-4 webhook payload, grouped, signed with HMAC-SHA256."""

    def __init__(self, cfg: WebhookReceiver, alerts: AlertSettings) -> None:
        super().__init__(cfg.name, cfg.url, cfg.timeout_seconds, cfg.tls_ca_file)
        self.cfg = cfg
        self.external_url = alerts.external_url
        secret = read_secret(cfg.secret_file, f"alerts.webhooks[{cfg.name}].secret_file")
        self.secret = secret.encode() if secret is not None else None
        self.group_wait = cfg.group_wait_seconds

    @property
    def repeat_seconds(self) -> float:
        return self.cfg.repeat_interval_seconds

    def wants(self, notification: Notification) -> bool:
        return self.cfg.send_resolved or notification.status == "firing"

    def _group_labels(self, notification: Notification) -> dict[str, str]:
        return {k: notification.labels[k] for k in self.cfg.group_by if k in notification.labels}

    def groups(self, notifications: list[Notification]) -> list[list[Notification]]:
        groups: dict[tuple, list[Notification]] = {}
        for n in notifications:
            groups.setdefault(tuple(sorted(self._group_labels(n).items())), []).append(n)
        return list(groups.values())

    def request(self, notifications: list[Notification], delivery_id: str) -> tuple[bytes, dict[str, str]]:
        payload = webhook_payload(
            self.name, notifications, self._group_labels(notifications[0]), self.external_url, self.cfg.max_alerts
        )
        body = json.dumps(payload).encode()
        headers = {SIGNATURE_HEADER: sign(self.secret, int(time.time()), body)} if self.secret else {}
        return body, headers


def receivers_from(settings: Settings) -> list[Receiver]:
    alerts = settings.alerts
    return [AlertmanagerPush(c, alerts) for c in alerts.alertmanagers] + [Webhook(c, alerts) for c in alerts.webhooks]


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: fall back to our own backoff


class Delivery:
    """The delivery workers of all receivers."""

    def __init__(
        self, settings: Settings, store: AuditStore, metrics: SidecarMetrics, receivers: list[Receiver] | None = None
    ) -> None:
        self.settings = settings.alerts
        self.store = store
        self.metrics = metrics
        self.receivers = receivers if receivers is not None else receivers_from(settings)
        self.consumer = self.settings.consumer_name or socket.gethostname()
        # A blocking read must return well within the socket timeout, or it reads as an outage.
        self.block_ms = max(1, int(min(1.0, settings.redis.timeout_seconds / 2) * 1000))  # 0 blocks forever
        metrics.declare_receivers([r.name for r in self.receivers])
        missing = [r.name for r in self.receivers if r.name not in store.memory_alerts]
        if missing:
            raise ValueError(f"the audit store was built without receivers {missing}; give it every receiver's name")
        #: Claims made from memory: (receiver, fingerprint, status, start) -> expiry (monotonic).
        self._local_claims: dict[tuple[str, str, str, int], float] = {}
        #: Entries a receiver accepted whose 'sent' mark and XACK did not reach Redis (it went
        #: away between the 2xx and the write): (receiver, model, entry id) -> expiry. When
        #: the entry is handed out again it is only marked and acknowledged, not sent twice.
        self._unconfirmed: dict[tuple[str, str, str], float] = {}
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if not self.receivers:
            return
        self._session = aiohttp.ClientSession()
        for receiver in self.receivers:
            self._tasks.append(asyncio.create_task(self._memory_loop(receiver), name=f"saemon-deliver-{receiver.name}"))
        if self.store.enabled:
            for receiver in self.receivers:
                self._tasks.append(
                    asyncio.create_task(self._stream_loop(receiver), name=f"saemon-deliver-{receiver.name}-redis")
                )

    async def stop(self) -> None:
        tasks = self._tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- Redis mode ----------------------------------------------------------------------

    async def _stream_loop(self, receiver: Receiver) -> None:
        """The receiver's one worker over every model's alerts stream (the models the store
        has seen, read again each round: a new model joins within one block)."""
        store = self.store
        own_pending = True  # first, what this consumer read before a restart
        next_claim = time.monotonic() + self.settings.claim_idle_seconds
        while True:
            await store.wait_up()
            models = sorted(store.models)
            if not models:
                await asyncio.sleep(self.block_ms / 1000)
                continue
            try:
                if own_pending:
                    read = await store.pending_alerts(receiver.name, models, self.consumer)
                    own_pending = bool(read)
                elif time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self.settings.claim_idle_seconds / 2
                    read = await store.stale_alerts(
                        receiver.name, models, self.consumer, self.settings.claim_idle_seconds
                    )
                else:
                    read = await store.new_alerts(receiver.name, models, self.consumer, self.block_ms)
                    if read and receiver.group_wait:
                        await asyncio.sleep(receiver.group_wait)
                        read = read + await store.new_alerts(receiver.name, models, self.consumer, None)
                for model, entry_id, fields, why in read.malformed:
                    await self._dead_letter_queued(receiver, model, entry_id, fields, "malformed", why)
                by_model: dict[str, list[QueuedAlert]] = {}
                for alert in read.alerts:
                    by_model.setdefault(alert.model, []).append(alert)
                for model, alerts in by_model.items():
                    await self._deliver_queued(receiver, model, alerts)
            except StoreUnavailable:
                own_pending = True  # when Redis is back, first finish what was read before
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop delivery: count, log, retry later
                self.metrics.redis_errors.labels("deliver").inc()
                log.exception("alert delivery to %s failed; retrying", receiver.name)
                await asyncio.sleep(1.0)

    async def _deliver_queued(self, receiver: Receiver, model: str, alerts: list[QueuedAlert]) -> None:
        store = self.store
        done: list[str] = []  # acknowledge without sending
        to_send: list[Entry] = []
        ttl_ms = self._claim_ttl_ms(receiver)
        confirm: list[QueuedAlert] = []  # sent before Redis went away: finish the bookkeeping only
        unsent: list[QueuedAlert] = []
        for alert in alerts:
            seen = self._unconfirmed.pop((receiver.name, model, alert.entry_id), None) is not None
            (confirm if seen else unsent).append(alert)
        if confirm:
            await self._confirm(receiver, model, confirm)
        for alert in unsent:
            n = alert.notification
            if (
                receiver.name in alert.delivered_to
                or (alert.only_for and alert.only_for != receiver.name)
                or not receiver.wants(n)
            ):
                done.append(alert.entry_id)
            elif alert.times_delivered > self.settings.max_deliveries:
                await self._dead_letter_queued(
                    receiver,
                    model,
                    alert.entry_id,
                    n.to_fields(),
                    "max_deliveries",
                    f"handed out {alert.times_delivered} times",
                )
            elif await store.claim_delivery(receiver.name, alert, ttl_ms):
                to_send.append(Entry(alert.entry_id, n, queued=alert))
            else:
                self.metrics.deliveries.labels(receiver.name, n.status, "deduplicated").inc()
                done.append(alert.entry_id)
        await store.acknowledge(receiver.name, model, done)
        for group_entries in self._groups(receiver, to_send):
            result, detail = await self._send(receiver, group_entries)
            queued = [e.queued for e in group_entries if e.queued is not None]
            if result == "success":
                await self._confirm(receiver, model, queued)
            else:
                for e in group_entries:
                    fields = e.notification.to_fields()
                    if e.queued is not None and e.queued.delivery_id:  # a redrive that failed again
                        fields["delivery_id"] = e.queued.delivery_id
                    await self._dead_letter_queued(receiver, model, e.entry_id, fields, result, detail)
                await store.release_claims(receiver.name, model, queued)

    async def _confirm(self, receiver: Receiver, model: str, alerts: list[QueuedAlert]) -> None:
        """Mark delivered entries sent and acknowledge them; if Redis is away, remember them
        (bounded, for the claim's TTL) so their redelivery is acknowledged without a send."""
        try:
            await self.store.delivered(receiver.name, model, alerts)
        except StoreUnavailable:
            now = time.monotonic()
            for key in [k for k, expires in self._unconfirmed.items() if expires <= now]:
                del self._unconfirmed[key]
            expires = now + self._claim_ttl_ms(receiver) / 1000
            for alert in alerts:
                if len(self._unconfirmed) < MAX_UNCONFIRMED:
                    self._unconfirmed[(receiver.name, model, alert.entry_id)] = expires
            raise

    async def _dead_letter_queued(
        self, receiver: Receiver, model: str, entry_id: str, fields: dict, reason: str, detail: str
    ) -> None:
        record = {
            **fields,
            "receiver": receiver.name,
            "reason": reason,
            "detail": detail[:500],
            "entry_id": entry_id,
            "dead_lettered_at": str(time.time_ns()),
        }
        await self.store.dead_letter(receiver.name, model, entry_id, record)
        self._count_dead_letter(receiver, fields.get("status", "firing"), reason, detail)

    def _claim_ttl_ms(self, receiver: Receiver) -> int:
        return max(1, int(receiver.repeat_seconds * CLAIM_TTL_FRACTION * 1000))

    # -- memory mode ---------------------------------------------------------------------

    async def _memory_loop(self, receiver: Receiver) -> None:
        queue = self.store.memory_alerts[receiver.name]
        while True:
            items = [await queue.get()]
            if receiver.group_wait:
                await asyncio.sleep(receiver.group_wait)
            while not queue.empty():
                items.append(queue.get_nowait())
            try:
                await self._deliver_memory(receiver, items)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert delivery to %s from memory failed", receiver.name)
            finally:
                for item in items:
                    item.inflight.discard(receiver.name)

    async def _deliver_memory(self, receiver: Receiver, items: list[Pending]) -> None:
        to_send: list[Entry] = []
        for item in items:
            if item.flushed:  # written to Redis meanwhile: its consumer group delivers it
                continue
            n: Notification = item.payload
            if not receiver.wants(n):
                item.done.add(receiver.name)
                continue
            key = (receiver.name, n.fingerprint, n.status, n.starts_at)
            if self._claim_local(key, receiver):
                item.inflight.add(receiver.name)
                to_send.append(Entry(f"memory-{id(item):x}", n, item=item))
            else:
                self.metrics.deliveries.labels(receiver.name, n.status, "deduplicated").inc()
                item.done.add(receiver.name)
        for group_entries in self._groups(receiver, to_send):
            result, detail = await self._send(receiver, group_entries)
            for e in group_entries:
                n = e.notification
                key = (receiver.name, n.fingerprint, n.status, n.starts_at)
                assert e.item is not None
                e.item.done.add(receiver.name)
                if result == "success":
                    self.store.remember_delivery(receiver.name, n, e.entry_id, self._claim_ttl_ms(receiver))
                else:
                    self._local_claims.pop(key, None)
                    record = {
                        **n.to_fields(),
                        "receiver": receiver.name,
                        "reason": result,
                        "detail": detail[:500],
                        "dead_lettered_at": str(time.time_ns()),
                    }
                    self.store.append_dead_letter(n.model_name, record)
                    self._count_dead_letter(receiver, n.status, result, detail)

    def _claim_local(self, key: tuple[str, str, str, int], receiver: Receiver) -> bool:
        now = time.monotonic()
        for stale in [k for k, expires in self._local_claims.items() if expires <= now]:
            del self._local_claims[stale]
        if key in self._local_claims:
            return False
        self._local_claims[key] = now + receiver.repeat_seconds * CLAIM_TTL_FRACTION
        return True

    # -- sending -------------------------------------------------------------------------

    def _groups(self, receiver: Receiver, entries: list[Entry]) -> Iterable[list[Entry]]:
        """The receiver's groups, in order; an incident that changed within the grouping
        window (fired and resolved) is split over successive payloads, firing first."""
        by_notification = {id(e.notification): e for e in entries}
        for group in receiver.groups([e.notification for e in entries]):
            rounds: list[list[Entry]] = []
            for n in group:
                depth = sum(1 for r in rounds if any(e.notification.fingerprint == n.fingerprint for e in r))
                if depth == len(rounds):
                    rounds.append([])
                rounds[depth].append(by_notification[id(n)])
            yield from rounds

    async def _send(self, receiver: Receiver, entries: list[Entry]) -> tuple[str, str]:
        """Send one group with retries; returns (success | rejected | retries_exhausted, detail)."""
        assert self._session is not None
        notifications = [e.notification for e in entries]
        # a redriven dead letter keeps the delivery id it was first sent with
        first = (entries[0].queued.delivery_id if entries[0].queued is not None else "") or entries[0].entry_id
        delivery_id = first if len(entries) == 1 else f"{first}+{len(entries) - 1}"
        delay = self.settings.backoff_initial_seconds
        # Retried as long as a receiver can need (up to its repeat interval), then dead-lettered.
        deadline = time.monotonic() + min(self.settings.retry_deadline_seconds, receiver.repeat_seconds)
        cap = self.settings.max_attempts
        attempt = 0
        while True:
            attempt += 1
            outcome = await receiver.send(self._session, notifications, delivery_id)
            wait = min(max(delay, outcome.retry_after), self.settings.backoff_max_seconds)
            last = (cap is not None and attempt >= cap) or time.monotonic() + wait * 0.8 > deadline
            if outcome.result != "retry" or not last:
                for n in notifications:
                    self.metrics.deliveries.labels(receiver.name, n.status, outcome.result).inc()
            if outcome.result == "success":
                now = time.time_ns()
                for n in notifications:
                    self.metrics.delivery_latency.labels(receiver.name).observe(max(0.0, (now - n.created) / 1e9))
                return "success", ""
            detail = f"HTTP {outcome.status}: {outcome.detail}" if outcome.status else outcome.detail
            if outcome.result == "rejected":
                log.error(
                    "%s rejected %d alert(s) with %s; not retried (fix the receiver or its URL)",
                    receiver.name,
                    len(notifications),
                    detail,
                )
                return "rejected", detail
            if last:
                return "retries_exhausted", f"{detail} (after {attempt} attempts)"
            log.warning(
                "%s: attempt %d failed (%s); retrying in %.2f s (gives up after %.0f s more)",
                receiver.name,
                attempt,
                detail,
                wait,
                max(0.0, deadline - time.monotonic()),
            )
            await asyncio.sleep(wait * random.uniform(0.8, 1.0))
            delay *= 2

    def _count_dead_letter(self, receiver: Receiver, status: str, reason: str, detail: str) -> None:
        self.metrics.dead_letters.labels(receiver.name, reason).inc()
        self.metrics.deliveries.labels(receiver.name, status, "dead_letter").inc()
        log.error("alert for %s dead-lettered (%s): %s", receiver.name, reason, detail)
