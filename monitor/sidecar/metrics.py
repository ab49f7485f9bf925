"""Every Prometheus metric the sidecar exports, declared once with fixed label sets.

Labels are bounded: model_name (vLLM's value, so PromQL can join saemon_* with vllm:*),
probe, severity, scope, reason, and the standard grpc_* labels. Never a request id.
One asyncio process owns the registry (no multiprocess mode: it loses exemplars).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)

from monitor import __version__

#: Why a batch or event was dropped; pre-initialised so rate() works from the first scrape.
DROP_REASONS = (
    "malformed",  # shapes disagree with the pack, empty ids, bad scope
    "unknown_pack",  # the batch names a pack (or version) that is not loaded
    "unknown_model",  # a model name this sidecar does not serve (sidecar.model_names)
    "non_finite",  # NaN or infinity in a score
    "out_of_range",  # a position, count or length beyond what a step can hold
    "oversized",  # a message larger than ingest.max_message_bytes
    "client_queue_full",  # reported by clients: dropped before reaching the sidecar
    "unauthenticated",  # a call without a valid token
)

# Probe scores are activations, logits or probabilities: buckets cover all three.
SCORE_BUCKETS = (-10, -5, -2, -1, -0.5, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 5, 10, 20, 50)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Collector pauses: a young collection takes microseconds, a full one over many requests tens of ms.
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
GRPC_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


#: Why a notification was dead-lettered.
DEAD_LETTER_REASONS = ("rejected", "retries_exhausted", "max_deliveries", "malformed")
DELIVERY_RESULTS = ("success", "retry", "rejected", "dead_letter", "deduplicated")


class SidecarMetrics:
    """The sidecar's metrics on one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self.build_info = Info("saemon_build", "saemon build information.", registry=r)
        self.build_info.info({"version": __version__})
        # The standard process_*, python_info and python_gc_* series every Python exporter has.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.gc_pause = Histogram(
            "saemon_gc_pause_seconds",
            "Seconds the Python garbage collector stopped the sidecar, by generation (2 is a full "
            "collection: it walks every live request's state and delays every decision behind it).",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)

        self.tokens_scored = Counter(
            "saemon_tokens_scored_total",
            "Tokens whose feature scores reached the sidecar, by model and token scope.",
            ["model_name", "scope"],
            registry=r,
        )
        self.tokens_unscored = Counter(
            "saemon_tokens_unscored_total",
            "Token positions vLLM processed whose feature scores were not recovered (prefix-cache hits "
            "on KV the tap never saw with that prefix, or scored before a pack reload), by reason.",
            ["model_name", "reason"],
            registry=r,
        )
        self.requests_scored = Counter(
            "saemon_requests_scored_total",
            "Requests that finished with at least one scored token.",
            ["model_name"],
            registry=r,
        )
        self.requests_flagged = Counter(
            "saemon_requests_flagged_total",
            "Requests on which a probe fired at least once (counted once per request and probe).",
            ["model_name", "probe", "severity"],
            registry=r,
        )
        self.requests_aborted = Counter(
            "saemon_requests_aborted_total",
            "Requests an action: abort probe fired on, so the plugin ended their answer inside vLLM "
            "(counted once per request and probe).",
            ["model_name", "probe"],
            registry=r,
        )
        self.decisions = Counter(
            "saemon_decisions_total",
            "Probe decisions (fired / resolved) emitted as events.",
            ["model_name", "probe", "severity", "kind"],
            registry=r,
        )
        self.probe_score = Histogram(
            "saemon_probe_score",
            "A probe's final aggregated score per finished request (unitless; compare with the probe's threshold).",
            ["model_name", "probe"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.batches_received = Counter(
            "saemon_ingest_batches_total",
            "Step batches received from vLLM workers (accepted or not).",
            registry=r,
        )
        self.dropped = Counter(
            "saemon_events_dropped_total",
            "Step batches dropped instead of scored, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.summaries_rejected = Counter(
            "saemon_summaries_rejected_total",
            "Request summaries refused on their own inside accepted step batches (the batch's other rows were scored), by reason.",
            ["reason"],
            registry=r,
        )
        for reason in ("malformed", "out_of_range", "non_finite"):
            self.summaries_rejected.labels(reason)
        self.queue_depth = Gauge("saemon_ingest_queue_depth", "Step batches waiting in the ingest queue.", registry=r)
        self.queue_capacity = Gauge(
            "saemon_ingest_queue_capacity", "Capacity of the ingest queue, in step batches.", registry=r
        )
        self.ingest_latency = Histogram(
            "saemon_ingest_latency_seconds",
            "Seconds from a worker producing a step batch to the sidecar having scored it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_active = Gauge(
            "saemon_requests_active", "Requests with state in the sidecar (not finished).", registry=r
        )
        self.requests_evicted = Counter(
            "saemon_requests_evicted_total",
            "Request states evicted before their end marker arrived, by reason (idle, capacity).",
            ["reason"],
            registry=r,
        )
        self.requests_unjudged = Counter(
            "saemon_requests_unjudged_total",
            "Live requests (seen in two or more steps) evicted before their end marker, so their "
            "end-of-request probes were never judged; each also has an UNJUDGED decision event.",
            ["model_name", "reason"],
            registry=r,
        )
        for reason in ("idle", "capacity"):
            self.requests_evicted.labels(reason)
        self.probes_loaded = Gauge(
            "saemon_probes_loaded", "Probes currently evaluated, from all loaded packs.", registry=r
        )
        self.config_reload_ok = Gauge(
            "saemon_config_last_reload_successful",
            "1 if the last probe pack (re)load succeeded, else 0.",
            registry=r,
        )
        self.config_reload_time = Gauge(
            "saemon_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful probe pack (re)load.",
            registry=r,
        )

        # The audit store (Redis) and alert delivery.
        self.redis_up = Gauge(
            "saemon_redis_up",
            "1 when the Redis audit store answers, else 0 (absent when none is configured).",
            registry=r,
        )
        self.redis_errors = Counter(
            "saemon_redis_errors_total",
            "Redis commands that failed, by operation (write, read, deliver, stats).",
            ["operation"],
            registry=r,
        )
        for operation in ("write", "read", "deliver", "stats"):
            self.redis_errors.labels(operation)
        self.redis_backlog = Gauge(
            "saemon_redis_backlog", "Audit writes (events, reports, alerts) waiting for Redis.", registry=r
        )
        self.redis_backlog_capacity = Gauge(
            "saemon_redis_backlog_capacity", "Capacity of the Redis backlog, in writes.", registry=r
        )
        self.redis_backlog_dropped = Counter(
            "saemon_redis_backlog_dropped_total",
            "Audit writes dropped because the backlog was full while Redis was away, by kind.",
            ["kind"],
            registry=r,
        )
        for kind in ("event", "report", "alert", "dead_letter", "dedup", "token_text"):
            self.redis_backlog_dropped.labels(kind)
        self.token_text_errors = Counter(
            "saemon_token_text_errors_total",
            "Finished requests whose token text could not be made (tokenizer or redactor error).",
            registry=r,
        )
        self.stream_length = Gauge(
            "saemon_stream_length",
            "Entries in a Redis stream (XLEN), by model and stream (events, alerts, dead_letter).",
            ["model_name", "stream"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "saemon_alert_consumer_lag",
            "Alert notifications not yet read by a receiver's consumer group (XINFO GROUPS lag).",
            ["model_name", "receiver"],
            registry=r,
        )
        self.consumer_pending = Gauge(
            "saemon_alert_consumer_pending",
            "Alert notifications read by a receiver's consumer group but not yet acknowledged.",
            ["model_name", "receiver"],
            registry=r,
        )
        self.incidents_active = Gauge(
            "saemon_incidents_active", "Incidents (alerting label sets) currently firing.", registry=r
        )
        self.deliveries = Counter(
            "saemon_alert_deliveries_total",
            "Alert notifications handled per receiver, by status (firing, resolved) and result: "
            "success (2xx), retry (5xx, 429, timeout; tried again), rejected (other 4xx, not "
            "retried), dead_letter (given up), deduplicated (already notified this incident).",
            ["receiver", "status", "result"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "saemon_alert_delivery_latency_seconds",
            "Seconds from the decision (or re-send) to the receiver's 2xx answer.",
            ["receiver"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "saemon_alert_dead_letters_total",
            "Alert notifications moved to the dead-letter stream, by receiver and reason.",
            ["receiver", "reason"],
            registry=r,
        )

        # The standard gRPC server set (go-grpc-prometheus names and labels).
        grpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter("grpc_server_started_total", "RPCs started on the server.", grpc_labels, registry=r)
        self.grpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            [*grpc_labels, "grpc_code"],
            registry=r,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received_total", "Stream messages received by the server.", grpc_labels, registry=r
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent_total", "Stream messages sent by the server.", grpc_labels, registry=r
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from an RPC's start to its completion on the server.",
            grpc_labels,
            buckets=GRPC_BUCKETS,
            registry=r,
        )

    def declare_receivers(self, receivers: list[str]) -> None:
        """Pre-initialise every receiver's series to 0 so rate() and alerts work at once."""
        for receiver in receivers:
            for status in ("firing", "resolved"):
                for result in DELIVERY_RESULTS:
                    self.deliveries.labels(receiver, status, result)
            for reason in DEAD_LETTER_REASONS:
                self.dead_letters.labels(receiver, reason)
            self.delivery_latency.labels(receiver)


class GcPauses:
    """Times every garbage collection into ``saemon_gc_pause_seconds`` (a ``gc.callbacks``
    hook, installed by the running sidecar only: tests build many SidecarMetrics).

    The hook observes pre-resolved children only: ``labels()`` takes the family's lock while
    allocating, and a collection started under that lock must not wait for it again.
    """

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._histograms = [metrics.gc_pause.labels(str(g)) for g in range(3)]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._histograms[info["generation"]].observe(time.perf_counter() - self._started)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
