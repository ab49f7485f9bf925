"""From probe decisions to incidents, in Alertmanager's own formats.

An **incident** is one alert in Alertmanager's sense: a label set (``alertname``,
``severity``, ``model_name``, ``probe``; never a request id, so the label set stays
bounded) that starts firing when the probe fires on a request and resolves when the last
request it fired on has ended. Every change of an incident, and a periodic re-send while it
is active, is a **notification**: what the delivery workers send to receivers.

This module is pure: labels, fingerprints and group keys exactly as Alertmanager computes
them, the ``/api/v2/alerts`` body, the version-4 webhook payload, and the HMAC signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from monitor.config import AlertSettings
from monitor.proto.saemon.v1 import monitor_pb2 as pb

SEVERITY_NAMES: dict[pb.Severity, str] = {
    pb.SEVERITY_INFO: "info",
    pb.SEVERITY_WARNING: "warning",
    pb.SEVERITY_CRITICAL: "critical",
}
#: Go's zero time, which Alertmanager writes as endsAt of a firing alert in webhooks.
ZERO_TIME = "0001-01-01T00:00:00Z"
#: Header carrying ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
SIGNATURE_HEADER = "X-Saemon-Signature"
#: Header carrying the notification's stable id: a receiver can drop a redelivered copy.
DELIVERY_HEADER = "X-Saemon-Delivery"

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted labels, each written as
    name 0xFF value 0xFF, as 16 hex digits (prometheus/common model.LabelsToSignature)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for chunk in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in chunk:
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def label_set_string(labels: Mapping[str, str]) -> str:
    """``{a="x", b="y"}``: prometheus/common LabelSet.String(), sorted, values Go-quoted."""
    return "{" + ", ".join(f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels)) + "}"


def group_key(group_labels: Mapping[str, str], route: str = "{}") -> str:
    """Alertmanager's groupKey: the route's key, a colon, the group's label set."""
    return f"{route}:{label_set_string(group_labels)}"


def rfc3339(unix_nanos: int) -> str:
    """Go's RFC3339Nano (trailing zeros of the fraction trimmed), UTC."""
    seconds, nanos = divmod(unix_nanos, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def request_page(request_id: str, model_name: str = "", probe: str = "") -> str:
    """The path of a request's forensic page (``/ui/requests/<id>?model=<name>&probe=<probe>``;
    the probe is the one whose values colour the tokens first)."""
    query = urlencode({k: v for k, v in (("model", model_name), ("probe", probe)) if v}, quote_via=quote)
    return f"/ui/requests/{quote(request_id, safe='')}" + (f"?{query}" if query else "")


def alertname(concept: str) -> str:
    """``insecure_code`` -> ``SaemonInsecureCodeDetected``."""
    words = concept.replace("-", "_").split("_")
    return "Saemon" + "".join(w[:1].upper() + w[1:] for w in words if w) + "Detected"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """Check a signature header (what a receiver does); rejects stale timestamps (replays)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class Notification:
    """One incident's state to deliver: firing (new or re-sent) or resolved."""

    fingerprint: str
    status: str  # "firing" | "resolved"
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: int  # Unix ns
    ends_at: int  # Unix ns; 0 while firing
    created: int  # Unix ns of the decision (or re-send) that caused it: delivery latency
    model_name: str
    generator_url: str = ""

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for a Redis stream entry (readable with redis-cli)."""
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": json.dumps(dict(self.labels), sort_keys=True),
            "annotations": json.dumps(dict(self.annotations), sort_keys=True),
            "starts_at": str(self.starts_at),
            "ends_at": str(self.ends_at),
            "created": str(self.created),
            "model_name": self.model_name,
            "generator_url": self.generator_url,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Notification:
        return cls(
            fingerprint=fields["fingerprint"],
            status=fields["status"],
            labels=json.loads(fields["labels"]),
            annotations=json.loads(fields["annotations"]),
            starts_at=int(fields["starts_at"]),
            ends_at=int(fields["ends_at"]),
            created=int(fields["created"]),
            model_name=fields["model_name"],
            generator_url=fields.get("generator_url", ""),
        )

    def alertmanager_alert(self, now_ns: int, ttl_seconds: float) -> dict:
        """One element of POST /api/v2/alerts. A firing alert ends at now + TTL unless re-sent,
        so Alertmanager resolves it by itself if saemon goes away."""
        ends = self.ends_at if self.status == "resolved" else now_ns + int(ttl_seconds * 1e9)
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(ends),
            "generatorURL": self.generator_url,
        }

    def webhook_alert(self) -> dict:
        """One element of a version-4 webhook payload's ``alerts``."""
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at) if self.status == "resolved" else ZERO_TIME,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


def webhook_payload(
    receiver: str,
    notifications: Iterable[Notification],
    group_labels: Mapping[str, str],
    external_url: str,
    max_alerts: int = 0,
) -> dict:
    """Alertmanager's version-4 webhook body for one group (field for field)."""
    alerts = [n.webhook_alert() for n in notifications]
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": group_key(group_labels),
        "truncatedAlerts": truncated,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": dict(group_labels),
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


@dataclass
class _Incident:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: int
    model_name: str
    first_request: str
    requests: set[str] = field(default_factory=set)
    total_requests: int = 0
    last_sent: int = 0
    #: Requests restored from Redis after a restart, with when: they leave the incident when
    #: they end, or when nothing of them is seen for the idle window (they ended meanwhile).
    restored: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        """Everything but the member requests, which are kept one by one (see IncidentBook)."""
        return json.dumps(
            {
                "labels": self.labels,
                "annotations": self.annotations,
                "starts_at": self.starts_at,
                "model_name": self.model_name,
                "first_request": self.first_request,
                "total_requests": self.total_requests,
                "last_sent": self.last_sent,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, requests: set[str], now: float) -> _Incident:
        raw = json.loads(text)
        return cls(
            labels=dict(raw["labels"]),
            annotations=dict(raw["annotations"]),
            starts_at=int(raw["starts_at"]),
            model_name=str(raw["model_name"]),
            first_request=str(raw["first_request"]),
            requests=requests,
            total_requests=int(raw["total_requests"]),
            last_sent=int(raw["last_sent"]),
            restored=dict.fromkeys(requests, now),
        )


class IncidentBook:
    """Active incidents, fed with decisions and request ends; yields notifications.

    Only probes whose action is ``alert`` or ``abort`` open incidents. A request joins an incident when
    its probe fires and leaves it when the request ends (finished or evicted); a probe that
    stops firing mid-request (hysteresis) does not end the incident by itself.
    """

    def __init__(
        self,
        settings: AlertSettings,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str, str, str | None], None] = lambda fingerprint, model, saved: None,
        on_member: Callable[[str, str, str, bool], None] = lambda fingerprint, model, request, joined: None,
        request_pages: bool = False,
    ) -> None:
        """``request_pages``: the forensic pages are on, so alerts link to the request's page
        (``generatorURL`` and a ``request_url`` annotation, under ``external_url``).

        How the sidecar keeps open incidents in Redis across restarts:
        ``on_change(fingerprint, model, JSON or None)`` after a change to an incident's own
        fields (None: it ended), ``on_member(fingerprint, model, request id, joined)`` when a
        request joins or leaves it. Each is O(1): an incident of many requests is never
        written whole again."""
        self.settings = settings
        self.clock = clock
        self.on_change = on_change
        self.on_member = on_member
        self.request_pages = request_pages
        self.active: dict[str, _Incident] = {}
        self._by_request: dict[str, set[str]] = {}

    def restore(self, saved: dict[str, str], members: dict[str, set[str]]) -> int:
        """Open incidents a previous run kept (fingerprint -> JSON, fingerprint -> member
        requests); returns how many."""
        now = self.clock()
        for fp, text in saved.items():
            if fp in self.active or not members.get(fp):
                continue  # known, or no request left in it: nothing to resolve
            try:
                incident = _Incident.from_json(text, members[fp], now)
            except (KeyError, TypeError, ValueError):
                continue  # not ours or damaged: nothing to resolve
            self.active[fp] = incident
            for request_id in incident.requests:
                self._by_request.setdefault(request_id, set()).add(fp)
        return len(self.active)

    def expire_restored(self, live: Callable[[str], bool], idle_seconds: float) -> list[Notification]:
        """Restored requests not seen again within ``idle_seconds`` ended while the sidecar
        was down: they leave their incidents, which resolve when empty."""
        now = self.clock()
        gone = []
        for incident in self.active.values():
            for request_id, since in list(incident.restored.items()):
                if live(request_id):
                    del incident.restored[request_id]  # back: it ends the normal way
                elif now - since >= idle_seconds:
                    gone.append(request_id)
        resolved = []
        for request_id in gone:
            resolved += self.on_request_end(request_id)
        return resolved

    def on_decision(self, decision: pb.Decision) -> Notification | None:
        if decision.kind != pb.DECISION_KIND_FIRED or decision.action not in (pb.ACTION_ALERT, pb.ACTION_ABORT):
            return None
        labels = {
            "alertname": alertname(decision.concept or decision.probe),
            "severity": SEVERITY_NAMES.get(decision.severity, "warning"),
            "model_name": decision.model_name,
            "probe": decision.probe,
        }
        fp = fingerprint(labels)
        now = decision.decided_unix_nanos or int(self.clock() * 1e9)
        incident = self.active.get(fp)
        new = incident is None
        if incident is None:
            incident = self.active[fp] = _Incident(labels, {}, now, decision.model_name, decision.request_id)
        joined = decision.request_id not in incident.requests
        if joined:
            incident.requests.add(decision.request_id)
            incident.total_requests += 1
        incident.restored.pop(decision.request_id, None)
        incident.annotations = self._annotations(decision, incident)
        self._by_request.setdefault(decision.request_id, set()).add(fp)
        if new or joined:
            if new:
                incident.last_sent = now
            self.on_change(fp, incident.model_name, incident.to_json())
            self.on_member(fp, incident.model_name, decision.request_id, True)
        if not new:
            return None
        return self._notification(fp, incident, "firing", created=now)

    def on_request_end(self, request_id: str) -> list[Notification]:
        """The request finished or was evicted: resolve incidents it was the last one of."""
        resolved = []
        for fp in self._by_request.pop(request_id, ()):
            incident = self.active.get(fp)
            if incident is None:
                continue
            incident.requests.discard(request_id)
            incident.restored.pop(request_id, None)
            self.on_member(fp, incident.model_name, request_id, False)
            if not incident.requests:
                del self.active[fp]
                now = int(self.clock() * 1e9)
                resolved.append(self._notification(fp, incident, "resolved", created=now, ends_at=now))
                self.on_change(fp, incident.model_name, None)
        return resolved

    def due(self) -> list[Notification]:
        """Re-sends for incidents still firing after resend_interval_seconds."""
        now = int(self.clock() * 1e9)
        interval = int(self.settings.resend_interval_seconds * 1e9)
        out = []
        for fp, incident in self.active.items():
            if now - incident.last_sent >= interval:
                incident.last_sent = now
                out.append(self._notification(fp, incident, "firing", created=now))
                self.on_change(fp, incident.model_name, incident.to_json())
        return out

    def _notification(
        self, fp: str, incident: _Incident, status: str, *, created: int, ends_at: int = 0
    ) -> Notification:
        return Notification(
            fingerprint=fp,
            status=status,
            labels=dict(incident.labels),
            annotations=dict(incident.annotations),
            starts_at=incident.starts_at,
            ends_at=ends_at,
            created=created,
            model_name=incident.model_name,
            generator_url=self._link(incident.first_request, incident.model_name, incident.labels.get("probe", ""))
            or self.settings.external_url,
        )

    def _link(self, request_id: str, model_name: str, probe: str = "") -> str:
        """The request's forensic page, when the pages are on and saemon's URL is known."""
        if not (self.request_pages and self.settings.external_url):
            return ""
        return self.settings.external_url.rstrip("/") + request_page(request_id, model_name, probe)

    def _annotations(self, decision: pb.Decision, incident: _Incident) -> dict[str, str]:
        """The first request identifies the incident; the latest decision gives the numbers."""
        annotations = {
            "summary": f"{decision.probe} ({decision.concept}) fired on {decision.model_name}",
            "description": (
                f"Probe {decision.probe} from pack {decision.pack}@{decision.pack_version} scored "
                f"{decision.score:.4g} against threshold {decision.threshold:.4g} on request "
                f"{decision.request_id}; {incident.total_requests} request(s) in this incident, the "
                f"first {incident.first_request}. Their reports (GetRequestReport) name the tokens that fired."
            ),
            "request_id": incident.first_request,
            "latest_request_id": decision.request_id,
            "requests": str(incident.total_requests),
            "score": f"{decision.score:.6g}",
            "threshold": f"{decision.threshold:.6g}",
            "pack": f"{decision.pack}@{decision.pack_version}",
        }
        if decision.action == pb.ACTION_ABORT:
            annotations["action"] = f"aborted: the answer of request {decision.request_id} was stopped " + (
                f"after token {decision.position}" if decision.position >= 0 else "mid-stream"
            )
        if self.settings.runbook_url:
            annotations["runbook_url"] = self.settings.runbook_url
        link = self._link(decision.request_id, decision.model_name, decision.probe)
        if link:
            annotations["request_url"] = link
        return annotations
