"""The forensic view: per-token traces in the scorer, their storage, and the /ui/ pages,
checked in a real headless chromium against real sidecars fed by synthetic ingest."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from redis_server import RedisServer, requires_redis
from synthetic import batch, end, summary, write_pack

from monitor.config import AlertSettings, SidecarSettings, UiSettings, load_settings
from monitor.errors import ConfigError
from monitor.harness.sidecar import SidecarProcess
from monitor.pack import PackSet, load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.sae.browse import Context, LatentReport, write_pack_contexts
from monitor.sidecar.alerts import IncidentBook, Notification, webhook_payload
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.scorer import Scorer
from monitor.sidecar.token_text import default_redactor, realign
from monitor.sidecar.ui import Credentials, chart, colours, page_templates, request_view

MODEL = "SmolLM2-135M-Instruct"
PROMPT = 6
#: The response's f0 per decode step: quiet, a spike at SPIKE (the max probe fires there), quiet.
RESPONSE = [0.2, 0.3, 0.25, 0.95, 0.4, 0.3, 0.2, 0.1]
SPIKE = PROMPT + 3


def steps_of(request_id: str, f1: float = 0.0) -> list[pb.StepBatch]:
    """A prefill chunk of PROMPT prompt tokens, then one decode step per RESPONSE value, then its end."""
    batches = [batch([summary(request_id, [0.1, f1], 0, PROMPT, scope=pb.TOKEN_SCOPE_PROMPT)], step=0)]
    for k, value in enumerate(RESPONSE):
        batches.append(batch([summary(request_id, [value, f1], PROMPT + k)], step=k + 1))
    batches.append(batch([], ends=[end(request_id)], step=len(RESPONSE) + 1))
    return batches


def scorer_for(packs: Path, **ui) -> Scorer:
    settings = SidecarSettings(ui=UiSettings(enabled=True, **ui))
    scorer = Scorer(settings, SidecarMetrics(CollectorRegistry()), served=[MODEL])
    scorer.set_packs(load_pack_dir(packs))
    return scorer


# -- the trace, in the scorer ---------------------------------------------------------------


def test_the_trace_holds_each_tokens_value_and_the_running_score_the_rule_saw(packs):
    scorer = scorer_for(packs)
    running = []
    for step in steps_of("r1"):
        scorer.apply(step)
        state = scorer.table.active.get("r1")
        if state is not None and state.tracks:
            running.append(next(iter(state.tracks.values())).scores().copy())
    state = scorer.table.get("r1")
    document = state.trace_document()
    assert document is not None, "a flagged request keeps its trace"
    (part,) = document["parts"]
    names = [p["name"] for p in part["probes"]]
    assert names == ["safety_max", "safety_mean"]
    steps = part["steps"]
    assert part["other"]["first"] == [0] and part["other"]["count"] == [PROMPT], "the prompt chunk, for colour"
    assert steps["first"] == list(range(PROMPT, PROMPT + len(RESPONSE)))
    assert steps["count"] == [1] * len(RESPONSE)
    # the max probe's token value is f0 itself; the running scores are the state machine's
    assert [v[0] for v in steps["value"]] == pytest.approx(RESPONSE, rel=1e-4)
    assert np.array(steps["score"]) == pytest.approx(np.array(running), rel=1e-4)
    max_probe = part["probes"][0]
    assert max_probe["fired_at"] == [SPIKE], "fired on the spike token"
    assert max_probe["features"][0]["feature"] == "f0"


def test_only_flagged_requests_keep_their_trace_unless_all_are_kept(packs):
    quiet = [batch([summary("q", [0.1, 0.0], k)], step=k) for k in range(3)] + [batch([], ends=[end("q")])]
    for keep, kept in (("flagged", False), ("all", True)):
        scorer = scorer_for(packs, keep=keep)
        for step in quiet:
            scorer.apply(step)
        assert (scorer.table.get("q").trace_document() is not None) is kept, keep


def test_a_trace_is_bounded_and_counts_what_it_did_not_keep(packs):
    scorer = scorer_for(packs, trace_steps=3, keep="all")
    for step in steps_of("long"):
        scorer.apply(step)
    (part,) = scorer.table.get("long").trace_document()["parts"]
    assert len(part["steps"]["first"]) == 3
    assert part["dropped"] == len(RESPONSE) - 3, "tokens of the steps not kept"


def test_exact_prompt_rows_are_kept_beside_the_steps_and_bad_ones_are_counted(packs):
    scorer = scorer_for(packs, keep="all")
    first = steps_of("p")[0]
    positions = np.arange(PROMPT, dtype="<i8")
    values = np.stack([np.linspace(0, 0.5, PROMPT), np.zeros(PROMPT)], axis=1).astype("<f4")
    first.token_scores.add(
        request_id="p", scope=pb.TOKEN_SCOPE_PROMPT, positions=positions.tobytes(), values=values.tobytes()
    )
    first.token_scores.add(request_id="p", scope=pb.TOKEN_SCOPE_PROMPT, positions=b"\x00" * 8, values=b"\x00")
    columns = scorer.validate(first)
    assert columns.rejected == {"malformed": 1}
    assert "values has 1 bytes; 1 positions x 2 features of float32 need 8" in columns.first_error
    assert len(columns.request_ids) == 1, "the batch's summary is scored regardless"
    scorer.apply(first, columns)
    for step in steps_of("p")[1:]:
        scorer.apply(step)
    (part,) = scorer.table.get("p").trace_document()["parts"]
    assert part["exact"]["positions"] == list(range(PROMPT))
    assert [v[0] for v in part["exact"]["value"]] == pytest.approx(values[:, 0].tolist(), abs=1e-6)


def test_tracing_off_records_nothing(packs):
    settings = SidecarSettings()
    scorer = Scorer(settings, SidecarMetrics(CollectorRegistry()), served=[MODEL])
    scorer.set_packs(PackSet(load_pack_dir(packs).packs))
    for step in steps_of("r"):
        scorer.apply(step)
    assert scorer.table.get("r").trace_document() is None


# -- the page's content (pure) ----------------------------------------------------------------


def test_redacted_text_is_cut_back_into_one_piece_per_token():
    pieces = ["Mail", " bob", "@exa", "mple", ".org", " or", " call", " 555", "-12", "3456", " now"]
    redacted = realign(pieces, default_redactor("".join(pieces)))
    assert len(redacted) == len(pieces)
    assert "".join(redacted) == "Mail <email> or call <number> now"
    assert redacted[1] == " <email>" and redacted[2:5] == ["", "", ""]
    assert redacted[0] == "Mail" and redacted[-1] == " now"


def test_colours_and_chart_follow_the_threshold():
    red, blue, none = colours([0.9, 0.1, None], threshold=0.5)
    assert red.startswith("rgba(220") and blue.startswith("rgba(37") and none == "transparent"
    drawn = chart([(0, 0.1), (1, 0.9), (2, 0.3)], threshold=0.5, fired_at=[1])
    assert drawn["points"].count(",") == 3
    (point,) = drawn["fired"]
    assert point["position"] == 1
    assert point["y"] < drawn["threshold_y"], "the firing point is drawn above the threshold line"


def test_credentials_refuse_an_open_page_beyond_loopback(tmp_path, clean_env):
    open_wide = load_settings(overrides={"sidecar": {"http_listen": "0.0.0.0:9464", "ui": {"enabled": True}}})
    with pytest.raises(ConfigError, match="beyond loopback"):
        Credentials(open_wide)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    guarded = load_settings(
        overrides={
            "sidecar": {
                "http_listen": "0.0.0.0:9464",
                "ui": {"enabled": True, "basic_auth_user": "oncall", "basic_auth_password_file": str(password)},
            }
        }
    )
    credentials = Credentials(guarded)
    assert credentials.allows("Basic b25jYWxsOnMzY3JldA==")  # oncall:s3cret
    assert not credentials.allows("Basic b25jYWxsOndyb25n")  # oncall:wrong
    assert not credentials.allows("Bearer s3cret")


def test_request_view_without_a_trace_says_so():
    report = pb.RequestReport(request_id="x", model_name=MODEL, finished=True)
    view = request_view(report, None, None, lambda pack: {})
    assert view["traced"] is False and view["tokens"] == [] and view["text_stored"] is False
    html = page_templates().get_template("request.html").render(view=view)
    assert 'id="no-trace"' in html and "0 probe score(s)" in html


# -- the pages, in a browser, from a real sidecar ------------------------------------------------


def ui_sidecar(
    directory: Path,
    packs: Path,
    *,
    redis: str | None = None,
    token: str | None = None,
    tokenizer: Path | None = None,
    **ui,
):
    sidecar = {
        "grpc_listen": f"unix://{directory}/saemon.sock",
        "probes_dir": str(packs),
        "ui": {"enabled": True, **ui},
    }
    if token is not None:
        token_file = directory / "token"
        directory.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
        sidecar["auth_token_file"] = str(token_file)
    sections: dict = {"redis": {"url": redis}} if redis else {}
    if tokenizer is not None:  # token text storage on, read with the model's tokenizer
        sections.setdefault("redis", {}).update(store_token_text=True, tokenizer=str(tokenizer))
    return SidecarProcess(directory, sidecar, **sections)


def ingest(process: SidecarProcess, batches: list[pb.StepBatch], token: str | None = None) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(process.settings["sidecar"]["grpc_listen"]) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        response = stub.Ingest(iter([pb.IngestRequest(batches=batches)]), metadata=metadata, timeout=10)
    assert response.batches_accepted == len(batches), response


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_report(process: SidecarProcess, request_id: str, headers: dict[str, str] | None = None) -> dict:
    deadline = time.monotonic() + 10
    while True:
        status, view = get_json(f"{process.http}/ui/requests/{request_id}", headers)
        if status == 200 and view["finished"]:
            return view
        assert time.monotonic() < deadline, (status, view)
        time.sleep(0.05)


@pytest.mark.browser
def test_the_request_page_shows_every_token_in_order_with_the_firing_token_and_threshold(tmp_path, packs, browser):
    (packs / "safety.contexts.json").write_text(
        json.dumps({"f1": {"latent": 7, "contexts": [{"text": "the ⟦lie⟧ was", "value": 2.5}]}})
    )
    with ui_sidecar(tmp_path / "sidecar", packs) as process:
        ingest(process, steps_of("req-1"))
        view = wait_report(process, "req-1")
        positions = [t["position"] for t in view["tokens"]]
        assert positions == list(range(PROMPT + len(RESPONSE))), "prompt and response tokens, in order"
        assert [t["text"] for t in view["tokens"]] == [None] * len(positions), "no token text when not stored"
        (spike,) = [t for t in view["tokens"] if t["fired"]]
        assert spike["position"] == SPIKE and spike["fired"] == ["safety_max"]

        browser.open(f"{process.http}/ui/requests/req-1")
        assert browser.status() == 200
        spans = browser.find_all("#tokens .tok")
        assert [int(s.get_attribute("data-position")) for s in spans] == positions
        assert [s.text for s in spans] == [f"#{p}" for p in positions], "tokens by position, no text"
        firing = browser.find_all("#tokens .tok.firing")
        assert [int(s.get_attribute("data-position")) for s in firing] == [SPIKE]
        assert browser.find_all('svg.chart[data-probe="safety_max"] line.threshold')
        point = browser.wait_for('svg.chart[data-probe="safety_max"] circle.firing-point')
        assert point.get_attribute("data-position") == str(SPIKE)
        assert "not stored" in browser.text("#no-text")
        # the SAE latent's top-activating contexts (saemon sae browse --pack) beside its contribution
        contexts = browser.find_all('table.features[data-probe="safety_mean"] .context')
        assert [c.text for c in contexts] == ["the ⟦lie⟧ was 2.5"]
        assert "safety_max" in browser.page_source and "req-1" in browser.text("#request-id")
        # switching the probe recolours the tokens (the page's JavaScript)
        before = [s.value_of_css_property("background-color") for s in spans]
        browser.execute(
            "var s = document.getElementById('probe-select'); s.value = '1'; s.dispatchEvent(new Event('change'));"
        )
        after = [s.value_of_css_property("background-color") for s in browser.find_all("#tokens .tok")]
        assert after != before
        browser.screenshot(tmp_path / "request.png")

        browser.open(f"{process.http}/ui/requests/no-such-request")
        assert browser.status() == 404
        assert "no-such-request" in browser.text("#error-detail")
        browser.screenshot(tmp_path / "missing.png")
        assert get_json(f"{process.http}/ui/requests/no-such-request")[0] == 404


@pytest.mark.browser
def test_the_list_shows_flagged_requests_and_updates_live(tmp_path, packs, browser):
    with ui_sidecar(tmp_path / "sidecar", packs) as process:
        ingest(process, steps_of("early"))
        wait_report(process, "early")
        browser.open(f"{process.http}/ui/")
        assert browser.status() == 200
        rows = browser.find_all("#flagged tr.flagged")
        assert [r.get_attribute("data-request") for r in rows] == ["early"]
        browser.wait_for("#live.on")
        ingest(process, steps_of("later"))
        new = browser.wait_for('#flagged tr.new[data-request="later"]')
        assert (
            new.find_element("css selector", "a")
            .get_attribute("href")
            .endswith(f"/ui/requests/later?model={MODEL}&probe=safety_max")
        )
        browser.screenshot(tmp_path / "list.png")
        status, listing = get_json(f"{process.http}/ui/?probe=safety_mean")
        assert status == 200 and listing["flagged"] == [], "the filter keeps only that probe"


@pytest.mark.browser
def test_the_pages_need_the_bearer_token_when_one_is_set(tmp_path, packs, browser):
    with ui_sidecar(tmp_path / "sidecar", packs, token="t0ken") as process:
        ingest(process, steps_of("secret"), token="t0ken")
        good = {"Authorization": "Bearer t0ken"}
        wait_report(process, "secret", good)
        assert get_json(f"{process.http}/ui/requests/secret")[0] == 401
        assert get_json(f"{process.http}/ui/requests/secret", {"Authorization": "Bearer nope"})[0] == 401
        browser.open(f"{process.http}/ui/requests/secret")
        assert browser.status() == 401
        assert "bearer token" in browser.text("#error-detail")
        browser.open(f"{process.http}/ui/requests/secret", headers=good)
        assert browser.status() == 200
        browser.wait_for("#tokens .tok.firing")
        # the metrics and health endpoints stay as they were
        with urllib.request.urlopen(f"{process.http}/healthz", timeout=5) as response:
            assert response.status == 200


@requires_redis
def test_a_finished_request_is_read_back_from_redis_with_the_reports_ttl(tmp_path, packs):
    with RedisServer(tmp_path / "redis") as redis:
        url = redis.url
        with ui_sidecar(tmp_path / "sidecar", packs, redis=url) as process:
            ingest(process, steps_of("kept"))
            in_memory = wait_report(process, "kept")
        # a new sidecar: nothing in memory, the page comes from Redis
        with ui_sidecar(tmp_path / "sidecar2", packs, redis=url) as process:
            from_redis = wait_report(process, "kept")
            assert from_redis["tokens"] == in_memory["tokens"]
            assert from_redis["probes"][0]["fired_at"] == [SPIKE]
            status, listing = get_json(f"{process.http}/ui/")
            assert status == 200
            assert [row["request_id"] for row in listing["flagged"]] == ["kept"], "the list reads the events stream"
        client = redis.admin()
        ttl = client.ttl(f"saemon:{{{MODEL}}}:trace:kept")
        assert 0 < ttl <= 7 * 86400


def test_alerts_link_to_the_request_page_when_the_pages_are_on():
    def fired(book: IncidentBook) -> Notification:
        decision = pb.Decision(
            kind=pb.DECISION_KIND_FIRED,
            action=pb.ACTION_ALERT,
            request_id="chatcmpl-1/a",
            model_name=MODEL,
            probe="deception",
            concept="deception",
            severity=pb.SEVERITY_CRITICAL,
            decided_unix_nanos=1,
        )
        notification = book.on_decision(decision)
        assert notification is not None
        return notification

    settings = AlertSettings(external_url="https://saemon.example/")
    linked = fired(IncidentBook(settings, request_pages=True))
    page = f"https://saemon.example/ui/requests/chatcmpl-1%2Fa?model={MODEL}&probe=deception"
    assert linked.generator_url == page and linked.annotations["request_url"] == page
    assert webhook_payload("oncall", [linked], {}, settings.external_url, 0)["alerts"][0]["generatorURL"] == page
    plain = fired(IncidentBook(settings))
    assert plain.generator_url == "https://saemon.example/" and "request_url" not in plain.annotations


def test_openmetrics_scrapes_carry_the_flagged_request_id_as_an_exemplar(tmp_path, packs):
    with ui_sidecar(tmp_path / "sidecar", packs) as process:
        ingest(process, steps_of("exemplary"))
        wait_report(process, "exemplary")
        request = urllib.request.Request(
            f"{process.http}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            text = response.read().decode()
        (line,) = [s for s in text.splitlines() if s.startswith("saemon_requests_flagged_total{") and " # " in s]
        assert 'probe="safety_max"' in line and '# {request_id="exemplary"} 1.0' in line
        with urllib.request.urlopen(f"{process.http}/metrics", timeout=5) as response:
            assert " # {" not in response.read().decode(), "the classic text format has no exemplars"


def test_a_packs_latent_contexts_are_written_by_feature_name(tmp_path):
    pack = write_pack(tmp_path)
    report = LatentReport(7, 1000, 12, 3.0, [Context(3.0, "a ⟦b⟧ c", 0, 1)])
    path = write_pack_contexts(pack, [report], tmp_path / "safety.contexts.json")
    written = json.loads(path.read_text())
    assert written == {
        "f1": {
            "latent": 7,
            "tokens": 1000,
            "frequency": 0.012,
            "max_value": 3.0,
            "contexts": [{"text": "a ⟦b⟧ c", "value": 3.0}],
        }
    }
    assert [p.name for p in load_pack_dir(tmp_path).packs] == ["safety"], "the pack directory ignores it"


def test_basic_auth_guards_the_pages_of_a_sidecar_listening_beyond_loopback(tmp_path, packs):
    password = tmp_path / "ui-password"
    password.write_text("hunter2\n")
    process = ui_sidecar(tmp_path / "sidecar", packs, basic_auth_user="oncall", basic_auth_password_file=str(password))
    process.settings["sidecar"]["http_listen"] = f"0.0.0.0:{process.http_port}"
    process.write_config()
    with process:
        ingest(process, steps_of("guarded"))
        good = {"Authorization": "Basic " + base64.b64encode(b"oncall:hunter2").decode()}
        assert wait_report(process, "guarded", good)["probes"][0]["fired_at"] == [SPIKE]
        request = urllib.request.Request(f"{process.http}/ui/", headers={"Accept": "text/html"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic"), "a browser asks for the login"
        wrong = {"Authorization": "Basic " + base64.b64encode(b"oncall:wrong").decode()}
        assert get_json(f"{process.http}/ui/", wrong)[0] == 401


@requires_redis
def test_stored_token_text_comes_back_redacted_one_piece_per_token(tmp_path, packs, default_model):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_model / "tokenizer.json"))
    ids = tokenizer.encode("Write to bob@example.org about the sea and the ships today").ids
    count = PROMPT + len(RESPONSE)
    ids = (ids * count)[:count]
    steps = steps_of("texted")
    steps[-1].ends[0].token_ids.extend(ids)
    with RedisServer(tmp_path / "redis") as redis:
        with ui_sidecar(tmp_path / "sidecar", packs, redis=redis.url, tokenizer=default_model) as process:
            ingest(process, steps)
            in_memory = wait_report(process, "texted")
        with ui_sidecar(tmp_path / "sidecar2", packs, redis=redis.url, tokenizer=default_model) as process:
            from_redis = wait_report(process, "texted")
    texts = [t["text"] for t in in_memory["tokens"]]
    assert in_memory["text_stored"] and len(texts) == count
    assert "<email>" in "".join(texts) and "bob@" not in "".join(texts), "redacted, and nothing else leaks"
    assert [t["text"] for t in from_redis["tokens"]] == texts, "Redis keeps the same pieces"
