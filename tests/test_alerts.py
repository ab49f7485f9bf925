"""Incidents and Alertmanager's formats, without I/O."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from monitor.config import AlertSettings, load_settings
from monitor.errors import ConfigError
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.alerts import (
    ZERO_TIME,
    IncidentBook,
    alertname,
    fingerprint,
    group_key,
    rfc3339,
    sign,
    verify,
    webhook_payload,
)


def test_fingerprint_matches_alertmanagers_test_vector():
    # prometheus/common model/signature_test.go and Alertmanager's own alert fingerprints.
    assert fingerprint({"job": "foo", "severity": "warning"}) == "9266ef3da838ad95"
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a 64 offset basis: the empty label set
    assert fingerprint({"severity": "warning", "job": "foo"}) == "9266ef3da838ad95"  # order-free


def test_fingerprint_separates_names_from_values():
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})


def test_group_key_and_times_are_formatted_as_alertmanager_does():
    assert group_key({"model_name": "m", "alertname": "X"}) == '{}:{alertname="X", model_name="m"}'
    assert rfc3339(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert rfc3339(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert alertname("insecure_code") == "SaemonInsecureCodeDetected"
    assert alertname("deception") == "SaemonDeceptionDetected"


def decision(request_id: str, kind=pb.DECISION_KIND_FIRED, probe="p", action=pb.ACTION_ALERT, at=0) -> pb.Decision:
    return pb.Decision(
        id=f"d-{request_id}-{kind}",
        kind=kind,
        request_id=request_id,
        model_name="m",
        probe=probe,
        concept="deception",
        pack="pk",
        pack_version="1",
        severity=pb.SEVERITY_CRITICAL,
        action=action,
        score=0.9,
        threshold=0.8,
        decided_unix_nanos=at,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_incident_fires_once_for_many_requests_and_resolves_when_the_last_ends():
    clock = Clock()
    book = IncidentBook(AlertSettings(resend_interval_seconds=60, runbook_url="https://runbooks.example/saemon"), clock)
    first = book.on_decision(decision("r1", at=int(1000e9)))
    assert first is not None and first.status == "firing"
    assert first.labels == {
        "alertname": "SaemonDeceptionDetected",
        "severity": "critical",
        "model_name": "m",
        "probe": "p",
    }
    assert first.fingerprint == fingerprint(first.labels)
    assert first.starts_at == int(1000e9) and first.ends_at == 0
    assert first.annotations["request_id"] == "r1"
    assert first.annotations["runbook_url"] == "https://runbooks.example/saemon"
    assert book.on_decision(decision("r2")) is None  # same incident
    annotations = book.active[first.fingerprint].annotations
    assert (annotations["request_id"], annotations["latest_request_id"], annotations["requests"]) == ("r1", "r2", "2")
    # A probe that stops firing mid-request does not end the incident; the request's end does.
    assert book.on_decision(decision("r1", kind=pb.DECISION_KIND_RESOLVED)) is None
    assert book.on_request_end("r1") == []
    clock.now = 1010.0
    (resolved,) = book.on_request_end("r2")
    assert resolved.status == "resolved" and resolved.ends_at == int(1010e9)
    assert resolved.fingerprint == first.fingerprint and resolved.starts_at == first.starts_at
    assert book.active == {}
    again = book.on_decision(decision("r3", at=int(1020e9)))
    assert again is not None and (again.fingerprint, again.starts_at) != (first.fingerprint, first.starts_at)


def test_firing_incidents_are_re_sent_every_interval_and_record_only_probes_never_open_one():
    clock = Clock()
    book = IncidentBook(AlertSettings(resend_interval_seconds=60), clock)
    assert book.on_decision(decision("r0", probe="quiet", action=pb.ACTION_RECORD)) is None
    book.on_decision(decision("r1", at=int(clock.now * 1e9)))
    clock.now += 59
    assert book.due() == []
    clock.now += 1
    (resend,) = book.due()
    assert resend.status == "firing" and resend.created == int(clock.now * 1e9)
    assert book.due() == []


def test_webhook_payload_has_alertmanagers_version_4_shape():
    book = IncidentBook(AlertSettings(external_url="http://saemon:9464"), Clock())
    a = book.on_decision(decision("r1", probe="a", at=int(1e18)))
    b = book.on_decision(decision("r2", probe="b", at=int(1e18)))
    payload = webhook_payload(
        "hook", [a, b], {"alertname": "SaemonDeceptionDetected"}, "http://saemon:9464", max_alerts=1
    )
    assert set(payload) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert payload["version"] == "4" and payload["status"] == "firing" and payload["receiver"] == "hook"
    assert payload["groupKey"] == '{}:{alertname="SaemonDeceptionDetected"}'
    assert payload["truncatedAlerts"] == 1 and len(payload["alerts"]) == 1
    (alert,) = payload["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert alert["endsAt"] == ZERO_TIME and alert["startsAt"] == "2001-09-09T01:46:40Z"
    assert alert["fingerprint"] == fingerprint(alert["labels"])
    both = webhook_payload("hook", [a, b], {}, "")
    assert both["commonLabels"] == {"alertname": "SaemonDeceptionDetected", "severity": "critical", "model_name": "m"}


def test_alertmanager_alerts_end_after_the_ttl_unless_re_sent():
    book = IncidentBook(AlertSettings(), Clock())
    firing = book.on_decision(decision("r1", at=int(1e18)))
    body = firing.alertmanager_alert(now_ns=int(1e18) + 5, ttl_seconds=240)
    assert body["endsAt"] == rfc3339(int(1e18) + 5 + 240 * 10**9)
    assert set(body) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


def test_signature_is_hmac_sha256_over_timestamp_and_body():
    body = b'{"version":"4"}'
    header = sign(b"k", 1700000000, body)
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(b"k", header, body, now=1700000010)
    assert not verify(b"k", header, body + b" ", now=1700000010)  # tampered
    assert not verify(b"other", header, body, now=1700000010)  # wrong key
    assert not verify(b"k", header, body, now=1700000000 + 301)  # replayed late
    assert not verify(b"k", "garbage", body, now=1700000000)


def test_receiver_settings_are_checked(clean_env, tmp_path):
    hook = {"name": "hook", "url": "http://127.0.0.1:1/"}
    with pytest.raises(ConfigError, match="receiver names must be unique; repeated: hook"):
        load_settings(overrides={"alerts.webhooks": [hook, hook]})
    with pytest.raises(ConfigError, match=r"alerts\.webhooks\.0\.name"):
        load_settings(overrides={"alerts.webhooks": [{**hook, "name": "Bad Name"}]})
    settings = load_settings(overrides={"alerts.webhooks": [hook], "redis.url": "redis://127.0.0.1:1/0"})
    assert settings.alerts.webhooks[0].send_resolved and settings.alerts.webhooks[0].group_wait_seconds < 1
