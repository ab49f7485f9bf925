"""The audit trail and alert delivery against a real redis-server and real HTTP receivers.

Each test starts redis-server on a free port, `saemon serve` as a process, and HTTP
receivers on loopback; ingest goes over the real gRPC socket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import grpc
import pytest
from polling import wait_for
from receivers import HttpReceiver
from redis_server import RedisServer, requires_redis
from synthetic import batch, summary

from monitor.harness.sidecar import SidecarProcess
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sidecar.alerts import fingerprint

pytestmark = [pytest.mark.redis, requires_redis]

MODEL = "SmolLM2-135M-Instruct"
KEY = "saemon:{SmolLM2-135M-Instruct}"
SECRET = "correct horse battery staple"


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


def sidecar(tmp_path, packs, redis_url=None, *, name="sidecar", redis=None, service=None, **alerts) -> SidecarProcess:
    (tmp_path / "hook.secret").write_text(SECRET)
    alerts.setdefault("consumer_name", "pod-0")
    alerts.setdefault("backoff_initial_seconds", 0.05)
    return SidecarProcess(
        tmp_path,
        {"grpc_listen": f"unix://{tmp_path}/{name}.sock", "probes_dir": str(packs), **(service or {})},
        name=name,
        redis={"url": redis_url, "reconnect_seconds": 0.1, **(redis or {})},
        alerts=alerts,
    )


def webhook(receiver: HttpReceiver, name="hook", **options) -> dict:
    return {"name": name, "url": receiver.url + "/hook", "secret_file": None, **options}


def stub(process: SidecarProcess) -> monitor_pb2_grpc.MonitorServiceStub:
    return monitor_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(process.settings["sidecar"]["grpc_listen"]))


def ingest(process: SidecarProcess, fire: list[str] = (), end: list[str] = (), quiet: list[str] = ()) -> None:
    """Requests in ``fire`` cross safety_max's threshold (0.8); ``quiet`` ones stay below."""
    summaries = [summary(r, [0.9, 0.1], 5) for r in fire] + [summary(r, [0.2, 0.1], 5) for r in quiet]
    ends = [pb.RequestEnd(request_id=r, finish_reason=pb.FINISH_REASON_STOP, response_tokens=1) for r in end]
    answer = stub(process).Ingest(iter([pb.IngestRequest(batches=[batch(summaries, ends)])]), timeout=10)
    assert answer.batches_accepted == 1, answer
    process.wait_idle()


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A receiver's check, written from the README ("Verifying webhook signatures")."""
    fields = dict(part.split("=", 1) for part in headers["x-saemon-signature"].split(","))
    timestamp = fields["t"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, fields["v1"])


def pending(redis_server: RedisServer, receiver: str = "hook") -> int:
    return redis_server.admin().xpending(f"{KEY}:alerts", f"deliver:{receiver}")["pending"]


# -- the audit trail -----------------------------------------------------------------------


def test_decisions_and_reports_are_kept_in_redis_and_served_after_a_restart(tmp_path, packs, redis_server):
    first = sidecar(tmp_path, packs, redis_server.url, redis={"events_maxlen": 10, "report_ttl_seconds": 3600})
    with first:
        ingest(first, fire=["r1"], quiet=["r2"])
        ingest(first, end=["r1", "r2"])
        admin = redis_server.admin()
        fired, resolved = wait_for(lambda: len(e := admin.xrange(f"{KEY}:events")) == 2 and e, what="two events")
        assert fired[1]["kind"] == "DECISION_KIND_FIRED" and fired[1]["request_id"] == "r1"
        assert resolved[1]["kind"] == "DECISION_KIND_RESOLVED" and fired[1]["probe"] == "safety_max"
        assert json.loads(fired[1]["decision"])["features"][0]["peakPosition"] == "5"
        report_key = f"{KEY}:report:r1"
        wait_for(lambda: admin.exists(report_key), what="the report")
        assert 3590 <= admin.ttl(report_key) <= 3600
        stored = json.loads(admin.get(report_key))
        assert stored["finishReason"] == "FINISH_REASON_STOP"
        assert stored["scores"][0]["topTokens"][0]["position"] == "5"
        # MAXLEN ~ keeps the stream bounded (approximate trimming works in 100-entry nodes).
        for k in range(30):
            ingest(first, fire=[f"t{k}"], end=[f"t{k}"])
        wait_for(lambda: first.metric("saemon_redis_backlog") == 0, what="backlog written")
        assert admin.xlen(f"{KEY}:events") < 62
        assert first.stop() == 0, first.log()

    second = sidecar(tmp_path, packs, redis_server.url, name="second")
    with second:
        report = stub(second).GetRequestReport(pb.GetRequestReportRequest(request_id="r1"), timeout=5).report
        assert report.finished and report.finish_reason == pb.FINISH_REASON_STOP
        assert report.decisions[0].kind == pb.DECISION_KIND_FIRED
        # WatchAlerts resumes after an event id: the replay, then live decisions.
        after = redis_server.admin().xrange(f"{KEY}:events", count=1)[0][0]
        total = redis_server.admin().xlen(f"{KEY}:events")
        watch = stub(second).WatchAlerts(pb.WatchAlertsRequest(after_event_id=after), timeout=10)
        replayed = [next(watch).decision for _ in range(total - 1)]
        assert all(d.event_id > after for d in replayed)
        assert [d.event_id for d in replayed] == sorted(d.event_id for d in replayed)
        ingest(second, fire=["live"])
        live = next(watch).decision
        assert live.request_id == "live" and live.event_id > replayed[-1].event_id
        watch.cancel()
        with pytest.raises(grpc.RpcError) as bad:
            list(stub(second).WatchAlerts(pb.WatchAlertsRequest(after_event_id="yesterday"), timeout=5))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert second.stop() == 0, second.log()


# -- delivery ------------------------------------------------------------------------------


def test_a_webhook_gets_one_signed_notification_per_incident_and_one_resolution(tmp_path, packs, redis_server):
    with HttpReceiver() as hook:
        process = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            resend_interval_seconds=0.2,
            external_url="http://saemon.example",
            webhooks=[webhook(hook, secret_file=str(tmp_path / "hook.secret"))],
        )
        with process:
            ingest(process, fire=["r1", "r2"])
            ingest(process, fire=["r3"])
            (firing,) = hook.wait(1)
            # Re-sends every 0.2 s reach the stream; the claim (repeat interval 4 h) holds them back.
            wait_for(
                lambda: (
                    process.metric(
                        "saemon_alert_deliveries_total", receiver="hook", status="firing", result="deduplicated"
                    )
                    >= 3
                ),
                what="re-sends deduplicated",
            )
            ingest(process, end=["r1", "r2", "r3"])
            received = hook.wait(2)
            assert process.stop() == 0, process.log()
        assert len(received) == 2
        for request in received:
            assert request.path == "/hook"
            assert verify_signature(SECRET, request.headers, request.body)
        body = firing.json
        assert body["status"] == "firing" and body["version"] == "4" and body["receiver"] == "hook"
        (alert,) = body["alerts"]
        labels = {
            "alertname": "SaemonDeceptionDetected",
            "severity": "critical",
            "model_name": MODEL,
            "probe": "safety_max",
        }
        assert alert["labels"] == labels and alert["fingerprint"] == fingerprint(labels)
        assert body["groupKey"] == f'{{}}:{{alertname="SaemonDeceptionDetected", model_name="{MODEL}"}}'
        assert body["externalURL"] == "http://saemon.example" and alert["endsAt"] == "0001-01-01T00:00:00Z"
        resolved = received[1].json
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
        assert resolved["alerts"][0]["startsAt"] == alert["startsAt"]
        assert resolved["alerts"][0]["endsAt"] > alert["startsAt"]


def test_alertmanager_push_re_sends_while_active_and_resolves_with_the_end_time(tmp_path, packs, redis_server):
    with HttpReceiver() as alertmanager:
        process = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            resend_interval_seconds=0.3,
            alertmanagers=[{"name": "am", "url": alertmanager.url}],
        )
        with process:
            ingest(process, fire=["r1"])
            posts = alertmanager.wait(2)  # the first push and one re-send
            ingest(process, end=["r1"])
            wait_for(
                lambda: (
                    process.metric("saemon_alert_deliveries_total", receiver="am", status="resolved", result="success")
                    == 1
                ),
                what="the resolution",
            )
            assert process.stop() == 0, process.log()
        posts = alertmanager.received
        assert all(p.path == "/api/v2/alerts" for p in posts)
        first, resend = posts[0].json[0], posts[1].json[0]
        assert set(first["labels"]) == {"alertname", "severity", "model_name", "probe"}
        assert resend["startsAt"] == first["startsAt"] and resend["endsAt"] > first["endsAt"]
        # A firing alert ends 4 re-send intervals from now unless re-sent (Prometheus's rule).
        assert first["endsAt"] > first["startsAt"]
        last = posts[-1].json[0]
        assert last["startsAt"] == first["startsAt"] and last["endsAt"] < resend["endsAt"]


def test_5xx_is_retried_until_2xx_and_4xx_is_dead_lettered_without_retry(tmp_path, packs, redis_server):
    with (
        HttpReceiver(responses=[500, 503]) as flaky,
        HttpReceiver(responses=[400]) as broken,
        HttpReceiver(responses=[503] * 3) as down,
    ):
        process = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            max_attempts=3,
            webhooks=[
                webhook(flaky, "flaky"),
                webhook(broken, "broken", send_resolved=False),
                webhook(down, "down", send_resolved=False),
            ],
        )
        with process:
            ingest(process, fire=["r1"])
            attempts = flaky.wait(3)
            wait_for(
                lambda: (
                    process.metric("saemon_alert_dead_letters_total", receiver="down", reason="retries_exhausted") == 1
                ),
                what="the 503s dead-lettered",
            )
            assert len(down.received) == 3
            wait_for(
                lambda: process.metric("saemon_alert_dead_letters_total", receiver="broken", reason="rejected") == 1,
                what="the 400 dead-lettered",
            )
            assert len(broken.received) == 1
            assert len({a.headers["x-saemon-delivery"] for a in attempts}) == 1  # one notification, three tries
            m = {
                r: process.metric("saemon_alert_deliveries_total", receiver="flaky", status="firing", result=r)
                for r in ("retry", "success")
            }
            assert m == {"retry": 2, "success": 1}
            assert (
                process.metric("saemon_alert_deliveries_total", receiver="broken", status="firing", result="rejected")
                == 1
            )
            dead = {e[1]["receiver"]: e[1] for e in redis_server.admin().xrange(f"{KEY}:dead_letter")}
            assert set(dead) == {"broken", "down"}
            assert dead["broken"]["reason"] == "rejected" and dead["broken"]["detail"].startswith("HTTP 400")
            assert dead["down"]["reason"] == "retries_exhausted" and dead["down"]["detail"].startswith("HTTP 503")
            assert dead["broken"]["status"] == "firing" and dead["broken"]["fingerprint"] == dead["down"]["fingerprint"]
            wait_for(
                lambda: all(pending(redis_server, r) == 0 for r in ("broken", "flaky", "down")),
                what="every entry acknowledged",
            )
            # Resolutions are not sent where send_resolved is off.
            ingest(process, end=["r1"])
            flaky.wait(4)
            wait_for(
                lambda: (
                    process.metric(
                        "saemon_alert_deliveries_total", receiver="down", status="resolved", result="success"
                    )
                    == 0
                    and pending(redis_server, "down") == 0
                    and redis_server.admin().xinfo_groups(f"{KEY}:alerts")[0]["lag"] == 0
                ),
                what="the resolution acknowledged without sending",
            )
            assert len(down.received) == 3 and len(broken.received) == 1
            assert process.stop() == 0, process.log()


def test_alerts_of_one_group_within_the_window_share_one_payload(tmp_path, packs, redis_server):
    with HttpReceiver() as hook:
        process = sidecar(tmp_path, packs, redis_server.url, webhooks=[webhook(hook, group_wait_seconds=0.3)])
        with process:
            # Four tokens at 0.9: safety_max (critical) and safety_mean (warning) fire together.
            stub(process).Ingest(
                iter([pb.IngestRequest(batches=[batch([summary("r1", [0.9, 0.9], 5, n=4)])])]), timeout=10
            )
            (payload,) = [r.json for r in hook.wait(1)]
            assert process.stop() == 0, process.log()
        assert sorted(a["labels"]["probe"] for a in payload["alerts"]) == ["safety_max", "safety_mean"]
        assert payload["groupLabels"] == {"alertname": "SaemonDeceptionDetected", "model_name": MODEL}
        assert (
            "severity" not in payload["commonLabels"]
            and payload["commonLabels"]["alertname"] == "SaemonDeceptionDetected"
        )


def test_exactly_once_per_incident_when_the_sidecar_dies_between_send_and_ack(tmp_path, packs):
    # The first sidecar's Redis user may not XACK: it sends, records the incident as sent,
    # and cannot acknowledge, which leaves it exactly between send and ack when it is killed.
    acl = [
        "user default on nopass ~* &* +@all",
        "user noack on >pw ~* &* +@all -xack",
        "user saemon on >pw ~* &* +@all",
    ]
    (tmp_path / "redis.password").write_text("pw")
    with RedisServer(tmp_path / "redis", acl=acl) as redis_server, HttpReceiver() as hook:
        auth = {"password_file": str(tmp_path / "redis.password")}
        first = sidecar(
            tmp_path, packs, redis_server.url, webhooks=[webhook(hook)], redis={**auth, "username": "noack"}
        )
        with first:
            ingest(first, fire=["r1"])
            hook.wait(1)
            admin = redis_server.admin()
            wait_for(
                lambda: any(admin.get(k).startswith("sent:") for k in admin.keys(f"{KEY}:dedup:*")),
                what="the incident recorded as sent",
            )
            assert pending(redis_server) == 1
            first.kill()
        second = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            name="second",
            webhooks=[webhook(hook)],
            redis={**auth, "username": "saemon"},
        )
        with second:
            wait_for(lambda: pending(redis_server) == 0, what="the pending entry acknowledged by the restarted sidecar")
            assert (
                second.metric("saemon_alert_deliveries_total", receiver="hook", status="firing", result="deduplicated")
                == 1
            )
            assert len(hook.received) == 1
            assert second.stop() == 0, second.log()


def test_a_sidecar_killed_mid_send_is_taken_over_and_delivers_again_with_the_same_id(tmp_path, packs, redis_server):
    # The second sidecar is another pod (another consumer): it takes the stuck entry over
    # with XAUTOCLAIM once it has been pending for claim_idle_seconds.
    hold = threading.Event()
    with HttpReceiver(hold=hold) as hook:
        first = sidecar(tmp_path, packs, redis_server.url, webhooks=[webhook(hook, timeout_seconds=30)])
        with first:
            ingest(first, fire=["r1"])
            hook.wait(1)
            first.kill()  # the receiver has the request; the sidecar never saw an answer
        hold.set()
        second = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            name="second",
            webhooks=[webhook(hook)],
            consumer_name="pod-1",
            claim_idle_seconds=0.5,
        )
        with second:
            again = hook.wait(2)
            owner = redis_server.admin().xpending_range(f"{KEY}:alerts", "deliver:hook", "-", "+", 10)
            assert [p["consumer"] for p in owner] in ([], ["pod-1"])
            wait_for(lambda: pending(redis_server) == 0, what="the redelivery acknowledged")
            assert second.stop() == 0, second.log()
    assert again[0].headers["x-saemon-delivery"] == again[1].headers["x-saemon-delivery"]
    assert again[0].json["alerts"][0]["fingerprint"] == again[1].json["alerts"][0]["fingerprint"]


def test_redis_outage_keeps_scoring_and_alerting_and_loses_no_event(tmp_path, packs, redis_server):
    with HttpReceiver() as hook:
        process = sidecar(tmp_path, packs, redis_server.url, webhooks=[webhook(hook)])
        with process:
            ingest(process, fire=["a1"], quiet=["a2"])
            ingest(process, end=["a1", "a2"])
            hook.wait(2)  # firing, resolved
            redis_server.stop()
            ingest(process, fire=["b1"], quiet=["b2"])  # decided while Redis is away
            wait_for(lambda: process.metric("saemon_redis_up") == 0, what="saemon_redis_up 0")
            status, body = process.readiness()
            assert status == 200 and body["checks"]["redis"].startswith("down")
            assert hook.wait(3)[2].json["status"] == "firing"  # delivered from memory
            ingest(process, end=["b1", "b2"])
            hook.wait(4)
            assert process.metric("saemon_redis_backlog") > 0
            redis_server.start()
            wait_for(
                lambda: process.metric("saemon_redis_up") == 1 and process.metric("saemon_redis_backlog") == 0,
                what="the backlog written after Redis returned",
            )
            admin = redis_server.admin()
            decided = sum(v for (name, _), v in process.metrics().items() if name == "saemon_decisions_total")
            assert decided == 4 and admin.xlen(f"{KEY}:events") == 4
            assert all(admin.exists(f"{KEY}:report:{r}") for r in ("a1", "a2", "b1", "b2"))
            # The outage's notifications are in the stream, marked as delivered: not sent twice.
            alerts = admin.xrange(f"{KEY}:alerts")
            assert [a[1].get("delivered_to") for a in alerts] == [None, None, "hook", "hook"]
            wait_for(
                lambda: pending(redis_server) == 0 and admin.xinfo_groups(f"{KEY}:alerts")[0]["lag"] == 0,
                what="the consumer group caught up",
            )
            assert len(hook.received) == 4
            assert process.stop() == 0, process.log()


def test_an_alert_accepted_just_as_redis_died_is_not_sent_again_when_redis_returns(tmp_path, packs, redis_server):
    # The receiver answers 2xx only after Redis is gone: the 'sent' mark and the XACK fail,
    # the entry stays pending, and Redis hands it out again once it is back.
    answer = threading.Event()
    with HttpReceiver(hold=answer) as hook:
        process = sidecar(tmp_path, packs, redis_server.url, webhooks=[webhook(hook)])
        with process:
            ingest(process, fire=["r1"])
            hook.wait(1)
            redis_server.kill()
            answer.set()
            wait_for(lambda: process.metric("saemon_redis_up") == 0, what="saemon_redis_up 0")
            redis_server.start()
            wait_for(lambda: pending(redis_server) == 0, what="the delivered entry acknowledged")
            time.sleep(0.5)
            assert len(hook.received) == 1
            admin = redis_server.admin()
            (key,) = admin.keys(f"{KEY}:dedup:*")
            assert admin.get(key).startswith("sent:")
            assert process.stop() == 0, process.log()


def test_redis_killed_mid_burst_writes_every_event_and_notifies_each_incident_once(tmp_path, packs, redis_server):
    # A burst of incidents (each request fires and ends: one firing and one resolved
    # notification) while redis-server is SIGKILLed and restarted under it: whatever Redis
    # acknowledged is in its append-only file, the rest waits in the sidecar's backlog.
    cycles = 24
    failures: list[BaseException] = []

    def burst() -> None:
        try:
            for k in range(cycles):
                ingest(process, fire=[f"b{k}"], quiet=[f"q{k}"])
                ingest(process, end=[f"b{k}", f"q{k}"])
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    def notified() -> list[tuple[str, str]]:
        return [(a["status"], a["startsAt"]) for r in hook.received for a in r.json["alerts"]]

    with HttpReceiver() as hook:
        process = sidecar(tmp_path, packs, redis_server.url, webhooks=[webhook(hook)])
        with process:
            sender = threading.Thread(target=burst)
            sender.start()
            wait_for(lambda: len(notified()) >= 8, what="the burst under way")
            redis_server.kill()
            wait_for(lambda: len(notified()) >= 24 or not sender.is_alive(), what="the burst going on without Redis")
            redis_server.start()
            sender.join(timeout=120)
            assert not failures and not sender.is_alive(), failures
            wait_for(
                lambda: process.metric("saemon_redis_up") == 1 and process.metric("saemon_redis_backlog") == 0,
                what="the backlog written after Redis returned",
            )
            wait_for(lambda: len(notified()) >= 2 * cycles and pending(redis_server) == 0, what="every notification")
            time.sleep(1.0)  # anything sent twice would arrive now
            admin = redis_server.admin()
            decided = sum(v for (name, _), v in process.metrics().items() if name == "saemon_decisions_total")
            assert decided == 2 * cycles  # a firing and a resolved decision per burst request
            assert admin.xlen(f"{KEY}:events") == decided
            assert all(admin.exists(f"{KEY}:report:{p}{k}") for k in range(cycles) for p in "bq")
            assert process.metric("saemon_redis_backlog_dropped_total", kind="event") == 0
            got = notified()
            assert len(got) == len(set(got)) == 2 * cycles, got
            assert sorted(status for status, _ in got) == ["firing"] * cycles + ["resolved"] * cycles
            deliveries = [r.headers["x-saemon-delivery"] for r in hook.received]
            assert len(deliveries) == len(set(deliveries))
            assert process.stop() == 0, process.log()


def test_without_redis_alerts_are_delivered_from_memory(tmp_path, packs):
    with HttpReceiver() as hook:
        process = sidecar(tmp_path, packs, None, webhooks=[webhook(hook)])
        with process:
            ingest(process, fire=["r1"], end=["r1"])
            firing, resolved = hook.wait(2)
            assert (firing.json["status"], resolved.json["status"]) == ("firing", "resolved")
            assert process.metric("saemon_redis_up") is None  # not configured: no series to alert on
            assert process.readiness() == (200, {"ready": True, "checks": {"grpc": "ok"}})
            report = stub(process).GetRequestReport(pb.GetRequestReportRequest(request_id="r1"), timeout=5).report
            assert report.finished
            assert process.stop() == 0, process.log()


# -- token text ----------------------------------------------------------------------------


def test_token_text_is_kept_redacted_under_its_own_ttl_only_when_configured(
    tmp_path, packs, redis_server, default_model
):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_model / "tokenizer.json"))
    ids = tokenizer.encode("Sure. Write to alice.smith@example.com and I will wire the money today.").ids
    position = len(ids) - 3
    process = sidecar(
        tmp_path,
        packs,
        redis_server.url,
        redis={
            "store_token_text": True,
            "tokenizer": str(default_model),
            "token_text_ttl_seconds": 600,
        },
    )
    with process:
        summaries = [summary("r1", [0.9, 0.1], position)]
        ends = [pb.RequestEnd(request_id="r1", token_ids=ids)]
        stub(process).Ingest(iter([pb.IngestRequest(batches=[batch(summaries), batch([], ends)])]), timeout=10)
        process.wait_idle()
        admin = redis_server.admin()
        wait_for(lambda: admin.exists(f"{KEY}:tokens:r1") and admin.exists(f"{KEY}:report:r1"), what="token text")
        assert 590 <= admin.ttl(f"{KEY}:tokens:r1") <= 600
        assert "⟦" not in admin.get(f"{KEY}:report:r1")  # the report itself never holds text
        report = stub(process).GetRequestReport(pb.GetRequestReportRequest(request_id="r1"), timeout=5).report
        (hit,) = report.scores[0].top_tokens
        expected = tokenizer.decode([ids[position]], skip_special_tokens=False)
        assert hit.position == position and f"⟦{expected}⟧" in hit.text
        assert "<email>" in hit.text and "alice" not in hit.text
        assert process.stop() == 0, process.log()

    plain = sidecar(tmp_path, packs, redis_server.url, name="plain")
    with plain:
        stub(plain).Ingest(
            iter(
                [
                    pb.IngestRequest(
                        batches=[batch([summary("r2", [0.9, 0.1], 1)], [pb.RequestEnd(request_id="r2", token_ids=ids)])]
                    )
                ]
            ),
            timeout=10,
        )
        plain.wait_idle()
        report = stub(plain).GetRequestReport(pb.GetRequestReportRequest(request_id="r2"), timeout=5).report
        assert report.scores[0].top_tokens[0].text == ""
        assert not admin.exists(f"{KEY}:tokens:r2")
        assert plain.stop() == 0, plain.log()


def test_saemon_receive_alerts_prints_signed_alerts_and_refuses_bad_signatures(tmp_path, packs):
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from monitor.harness import free_port

    (tmp_path / "hook.secret").write_text(SECRET)
    port = free_port()
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "receive-alerts",
            "--listen",
            f"127.0.0.1:{port}",
            "--secret-file",
            str(tmp_path / "hook.secret"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/alerts"
        wait_for(lambda: _answers(url), what="the receiver listening")
        process = sidecar(
            tmp_path, packs, None, webhooks=[{"name": "hook", "url": url, "secret_file": str(tmp_path / "hook.secret")}]
        )
        with process:
            ingest(process, fire=["r1"])
            wait_for(
                lambda: (
                    process.metric("saemon_alert_deliveries_total", receiver="hook", status="firing", result="success")
                    == 1
                ),
                what="the delivery",
            )
            assert process.stop() == 0, process.log()
        request = urllib.request.Request(url, data=b'{"alerts": []}', headers={"X-Saemon-Signature": "t=1,v1=00"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=10)
    (line,) = out.splitlines()
    alert = json.loads(line)
    assert alert["status"] == "firing" and alert["labels"]["probe"] == "safety_max" and alert["receiver"] == "hook"


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=1)
    except urllib.error.HTTPError:
        return True  # 401 without a signature: it is up
    except OSError:
        return False
    return True


def test_many_alerting_models_share_one_reader_per_receiver_and_each_incident_arrives_once(
    tmp_path, packs, redis_server
):
    """Before: a blocking reader per (receiver, model) exhausted the pool at 150 models,
    readiness said Redis was down and receivers got duplicates (311 of 300)."""
    models = [f"tenant-{i:03d}" for i in range(150)]
    with HttpReceiver() as first, HttpReceiver() as second:
        process = SidecarProcess(
            tmp_path,
            {
                "grpc_listen": f"unix://{tmp_path}/many.sock",
                "probes_dir": str(packs),
                "model_names": models,
                "max_model_names": 200,
            },
            redis={"url": redis_server.url, "reconnect_seconds": 0.1, "max_connections": 5},
            alerts={
                "consumer_name": "pod-0",
                "backoff_initial_seconds": 0.05,
                "webhooks": [webhook(first, "first"), webhook(second, "second")],
            },
        )
        with process:
            batches = [batch([summary(f"{m}-r", [0.9, 0.1], 5)], model=m) for m in models]
            answer = stub(process).Ingest(iter([pb.IngestRequest(batches=batches)]), timeout=30)
            assert answer.batches_accepted == len(models), answer
            process.wait_idle()

            def alerts(receiver: HttpReceiver) -> list[tuple[str, str]]:
                return [
                    (a["labels"]["model_name"], a["fingerprint"]) for r in receiver.received for a in r.json["alerts"]
                ]

            for receiver in (first, second):
                wait_for(lambda r=receiver: len(alerts(r)) >= len(models), timeout=60, what="every model's alert")
            time.sleep(1.0)  # a duplicate would arrive within the claim/retry cycle
            for receiver in (first, second):
                got = alerts(receiver)
                assert len(got) == len(set(got)) == len(models)
                assert {model for model, _ in got} == set(models)
            status, body = process.readiness()
            assert status == 200 and body["checks"]["redis"] == "ok"
            assert not process.metric("saemon_redis_errors_total", operation="deliver")
            clients = redis_server.admin().info("clients")["connected_clients"]
            assert clients <= 5 + 1, clients  # the pool's budget, and this admin connection


def test_a_receiver_down_for_a_while_gets_its_alert_and_a_dead_letter_can_be_redriven(tmp_path, packs, redis_server):
    """Before: five attempts in about 7 s, then dead-lettered for good and never delivered."""
    import subprocess
    import sys

    with HttpReceiver(responses=[500] * 8) as flaky, HttpReceiver(responses=[503] * 1000) as down:
        process = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            backoff_max_seconds=0.4,
            webhooks=[webhook(flaky, "flaky", send_resolved=False)],
        )
        with process:  # 8 failures over ~2.5 s: retried through, within the deadline
            ingest(process, fire=["r1"])
            received = flaky.wait(9, timeout=30)
            assert len({r.headers["x-saemon-delivery"] for r in received}) == 1
            assert (
                process.metric("saemon_alert_deliveries_total", receiver="flaky", status="firing", result="success")
                == 1
            )
            ingest(process, end=["r1"])  # the incident ends here, or the next run would restore it
            assert process.stop() == 0, process.log()

        process = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            name="second",
            retry_deadline_seconds=0.5,
            backoff_max_seconds=0.1,
            webhooks=[webhook(down, "down", send_resolved=False), webhook(flaky, "flaky", send_resolved=False)],
        )
        with process:
            ingest(process, fire=["r2"])
            wait_for(
                lambda: (
                    process.metric("saemon_alert_dead_letters_total", receiver="down", reason="retries_exhausted") == 1
                ),
                what="dead-lettered after the deadline",
            )
            first_id = down.received[0].headers["x-saemon-delivery"]
            delivered_to_flaky = len(flaky.received)
            down.responses.clear()  # the receiver is fixed
            config = tmp_path / "redrive.yaml"
            config.write_text(f"redis:\n  url: {redis_server.url}\n")
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "monitor.cli",
                    "--config",
                    str(config),
                    "alerts",
                    "redrive",
                    "--receiver",
                    "down",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert f"requeued {first_id} for down" in done.stdout and "1 dead letter(s) requeued" in done.stdout
            wait_for(lambda: down.received[-1].headers["x-saemon-delivery"] == first_id and len(down.received) > 1)
            time.sleep(0.5)
            assert sum(1 for r in down.received if r.headers["x-saemon-delivery"] == first_id) >= 2
            assert (
                process.metric("saemon_alert_deliveries_total", receiver="down", status="firing", result="success") == 1
            )
            assert len(flaky.received) == delivered_to_flaky, "the redriven entry is for 'down' only"
            assert redis_server.admin().xlen(f"{KEY}:dead_letter") == 0


def test_a_sidecar_killed_mid_incident_resolves_it_exactly_once_after_restart(tmp_path, packs, redis_server):
    """Before: incident state lived in memory, so a restart never sent the RESOLVED."""
    with HttpReceiver() as hook:
        first = sidecar(tmp_path, packs, redis_server.url, webhooks=[webhook(hook)])
        with first:
            ingest(first, fire=["r1", "r2"])
            (firing,) = hook.wait(1)
            admin = redis_server.admin()
            wait_for(lambda: admin.hlen(f"{KEY}:incidents") == 1, what="the open incident in Redis")
            wait_for(lambda: admin.hlen(f"{KEY}:incident_requests") == 2, what="its two requests, one field each")
            first.kill()  # SIGKILL: nothing is flushed or closed
        second = sidecar(
            tmp_path,
            packs,
            redis_server.url,
            name="second",
            webhooks=[webhook(hook)],
            # long enough that r2 cannot go idle between the restore and the check below on
            # a loaded machine (the window counts from the restore, at start-up)
            service={"request_idle_seconds": 8},
        )
        with second:
            assert second.metric("saemon_incidents_active") == 1  # restored
            ingest(second, end=["r1"])  # r1 ends normally; r2 ended while the sidecar was down
            time.sleep(0.5)
            assert len(hook.received) == 1, "still firing: r2 may yet come back"
            resolved = hook.wait(2, timeout=30)[1]
            time.sleep(1.5)  # a second RESOLVED would arrive within a sweep or two
            assert len(hook.received) == 2
            alert, gone = firing.json["alerts"][0], resolved.json["alerts"][0]
            assert resolved.json["status"] == "resolved" and gone["fingerprint"] == alert["fingerprint"]
            assert gone["startsAt"] == alert["startsAt"]
            assert second.metric("saemon_incidents_active") == 0
            wait_for(lambda: admin.hlen(f"{KEY}:incidents") == 0, what="the incident gone from Redis")
            assert admin.hlen(f"{KEY}:incident_requests") == 0
            assert second.stop() == 0, second.log()


def test_through_sentinel_a_failover_during_alert_traffic_loses_nothing(tmp_path, packs):
    """A master and a replica under one Sentinel; the master refuses writes it cannot
    replicate (min-replicas-to-write 1, as Redis advises for Sentinel): after a failover the
    sidecar follows the new master and every alert and event of before and after is there."""
    from monitor.harness.redis_server import RedisSentinel

    safe = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]
    with RedisServer(tmp_path / "master", extra_args=safe) as master:
        replica_args = [*safe, "--replicaof", "127.0.0.1", str(master.port)]
        with RedisServer(tmp_path / "replica", extra_args=replica_args) as replica:
            wait_for(
                lambda: (master.admin().info("replication").get("slave0") or {}).get("state") == "online",
                what="the replica online",
            )
            with RedisSentinel(tmp_path / "sentinel", master.port) as sentinel, HttpReceiver() as hook:
                wait_for(lambda: sentinel.admin().sentinel_master("mymaster")["num-slaves"] == 1, what="sentinel")
                process = sidecar(
                    tmp_path,
                    packs,
                    None,
                    redis={"sentinels": [sentinel.address], "url": None},
                    webhooks=[webhook(hook, send_resolved=False)],
                )
                with process:
                    for i in range(5):
                        ingest(process, fire=[f"before{i}"], end=[f"before{i}"])
                    hook.wait(5)
                    sentinel.admin().execute_command("SENTINEL", "FAILOVER", "mymaster")
                    wait_for(lambda: sentinel.master_port() == replica.port, timeout=20, what="the failover")
                    for i in range(5):
                        ingest(process, fire=[f"after{i}"], end=[f"after{i}"])
                    received = hook.wait(10, timeout=30)
                    starts = sorted(r.json["alerts"][0]["annotations"]["request_id"] for r in received)
                    assert starts == sorted([f"before{i}" for i in range(5)] + [f"after{i}" for i in range(5)])
                    new_master = replica.admin()

                    def fired() -> list[str]:
                        events = new_master.xrange(f"{KEY}:events")
                        return sorted(f["request_id"] for _, f in events if f["kind"] == "DECISION_KIND_FIRED")

                    wait_for(lambda: fired() == starts, timeout=30, what="every FIRED event on the new master")
                    time.sleep(1.0)
                    assert len(hook.received) == 10  # no alert twice
                    status, body = process.readiness()
                    assert status == 200 and body["checks"]["redis"] == "ok", body
                    assert process.stop() == 0, process.log()
