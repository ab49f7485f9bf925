"""The scorer: aggregations, rules, eviction, validation (in-process, exact values)."""

import math

import pytest
from prometheus_client import CollectorRegistry
from synthetic import batch, end, summary, write_pack

from monitor.config import SidecarSettings
from monitor.pack import load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.scorer import Rejected, Scorer

MODEL = "SmolLM2-135M-Instruct"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def make_engine(tmp_path, clock, probes=None, **settings) -> Scorer:
    write_pack(tmp_path, probes=probes)
    scorer = Scorer(SidecarSettings(**settings), SidecarMetrics(CollectorRegistry()), clock)
    scorer.set_packs(load_pack_dir(tmp_path))
    return scorer


def sample(scorer: Scorer, name: str, labels: dict | None = None) -> float | None:
    return scorer.metrics.registry.get_sample_value(name, labels or {})


def scores(scorer: Scorer, request_id: str) -> dict[str, pb.ProbeScore]:
    return {s.probe: s for s in scorer.report(request_id).scores}


def probe(name, aggregation, threshold=0.5, **extra):
    return {
        "name": name,
        "concept": "c",
        "features": ["f0"],
        "aggregation": aggregation,
        "threshold": threshold,
        **extra,
    }


def test_max_and_mean_are_exact_over_prefill_chunks_and_decode_steps(tmp_path, clock):
    scorer = make_engine(tmp_path, clock)
    scorer.apply(batch([summary("r", [0.2, 0.0], 0, n=10, sums=[1.0, 0.5])]))
    scorer.apply(batch([summary("r", [0.6, 0.1], 10, n=1)]))
    scorer.apply(batch([summary("r", [0.3, 0.9], 11, n=1)]))
    got = scores(scorer, "r")
    assert got["safety_max"].score == pytest.approx(0.6)
    assert got["safety_max"].peak_position == 10
    # mean of f0 = (1.0 + 0.6 + 0.3) / 12; of f1 = (0.5 + 0.1 + 0.9) / 12; probe = max of both
    assert got["safety_mean"].score == pytest.approx(1.9 / 12)
    assert got["safety_mean"].tokens == 12


def test_weighted_probe_scores_intercept_plus_weighted_feature_scores(tmp_path, clock):
    """A logistic-regression probe over features (SAE latents): for mean it is the logit of
    the regression on the features' mean activations; the top token is the strongest
    weighted contribution."""
    weighted = {
        "name": "lr",
        "concept": "c",
        "features": ["f0", "f1"],
        "aggregation": "mean",
        "threshold": 0.0,
        "weights": [2.0, -0.5],
        "intercept": -1.0,
    }
    scorer = make_engine(tmp_path, clock, probes=[weighted])
    scorer.apply(batch([summary("r", [0.2, 0.0], 0, n=10, sums=[1.0, 0.5])]))
    scorer.apply(batch([summary("r", [0.6, 3.0], 10, n=1)]))
    got = scores(scorer, "r")["lr"]
    assert got.score == pytest.approx(-1.0 + 2.0 * 1.6 / 11 - 0.5 * 3.5 / 11)
    assert got.top_tokens[0].feature == "f0" and got.top_tokens[0].value == pytest.approx(1.2)


def test_a_probe_decided_at_the_end_judges_the_final_score_once(tmp_path, clock):
    """decide: end ignores a running mean that crosses early and fires (then resolves) on
    the final score when the request ends, if min_tokens were reached."""
    at_end = probe("end", "mean", threshold=0.5, decide="end", min_tokens=3)
    scorer = make_engine(tmp_path, clock, probes=[at_end])
    assert scorer.apply(batch([summary("a", [0.9, 0], 0)])) == []  # running mean 0.9: not judged yet
    scorer.apply(batch([summary("a", [0.1, 0], 1), summary("a", [0.1, 0], 2)]))
    assert [d.kind for d in scorer.apply(batch([], ends=[end("a")]))] == []  # final mean 0.37
    scorer.apply(batch([summary("b", [0.2, 0], 0), summary("b", [0.8, 0], 1), summary("b", [0.9, 0], 2)]))
    decisions = scorer.apply(batch([], ends=[end("b")]))
    assert [d.kind for d in decisions] == [pb.DECISION_KIND_FIRED, pb.DECISION_KIND_RESOLVED]
    assert decisions[0].score == pytest.approx(1.9 / 3) and decisions[0].tokens == 3
    assert (
        sample(scorer, "saemon_requests_flagged_total", {"model_name": MODEL, "probe": "end", "severity": "warning"})
        == 1
    )
    scorer.apply(batch([summary("c", [0.9, 0], 0), summary("c", [0.9, 0], 1)]))  # too short to judge
    assert scorer.apply(batch([], ends=[end("c")])) == []


def test_ema_folds_a_chunk_as_n_tokens_of_its_mean(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, probes=[probe("e", "ema", ema_alpha=0.25)])
    scorer.apply(batch([summary("r", [1.0, 0], 0, n=1)]))  # first token initialises: 1.0
    scorer.apply(batch([summary("r", [0.0, 0], 1, n=2, sums=[0.0, 0])]))  # two zeros
    assert scores(scorer, "r")["e"].score == pytest.approx(0.75**2)
    scorer.apply(batch([summary("r", [1.0, 0], 3, n=1)]))
    assert scores(scorer, "r")["e"].score == pytest.approx(0.75**3 + 0.25)


def test_window_count_counts_tokens_above_threshold_in_the_last_window(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, probes=[probe("w", "window_count", threshold=3, window_tokens=4)])
    for position, above in enumerate([1, 1, 0, 1, 1, 0, 0, 0]):
        scorer.apply(batch([summary("r", [0.9 if above else 0.1, 0], position, counts=[above, 0])]))
        if position == 4:  # window = positions 1..4 -> 1 + 0 + 1 + 1
            assert scores(scorer, "r")["w"].score == 3
            assert scores(scorer, "r")["w"].firing
    assert scores(scorer, "r")["w"].score == 1  # positions 4..7 -> 1 + 0 + 0 + 0
    assert not scores(scorer, "r")["w"].firing


def test_fires_once_after_min_tokens_with_provenance(tmp_path, clock):
    scorer = make_engine(tmp_path, clock)
    decisions = []
    for position in range(6):
        decisions += scorer.apply(batch([summary("r", [0.7, 0.0], position)], produced=123))
    fired = [d for d in decisions if d.probe == "safety_mean"]
    assert [d.kind for d in fired] == [pb.DECISION_KIND_FIRED]
    decision = fired[0]
    assert decision.tokens == 4  # min_tokens, although the mean was above threshold from token 1
    assert decision.score == pytest.approx(0.7)
    assert (decision.pack, decision.pack_version, decision.request_id) == ("safety", "1", "r")
    assert decision.severity == pb.SEVERITY_WARNING and decision.action == pb.ACTION_ALERT
    assert decision.produced_unix_nanos == 123
    assert [(f.feature, f.layer) for f in decision.features] == [("f0", 14), ("f1", 14)]
    assert decision.features[0].peak_value == pytest.approx(0.7)
    assert (
        sample(
            scorer,
            "saemon_requests_flagged_total",
            {"model_name": MODEL, "probe": "safety_mean", "severity": "warning"},
        )
        == 1
    )
    # the max probe (threshold 0.8) never fired
    assert not any(d.probe == "safety_max" for d in decisions)


def test_hysteresis_keeps_a_hovering_score_from_flapping(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, probes=[probe("e", "ema", threshold=0.5, ema_alpha=1.0, hysteresis=0.1)])
    kinds = []
    for position, value in enumerate([0.55, 0.45, 0.52, 0.41, 0.39, 0.6]):
        kinds += [d.kind for d in scorer.apply(batch([summary("r", [value, 0], position)]))]
    # fires at 0.55; 0.45 / 0.52 / 0.41 stay above 0.4; 0.39 resolves; 0.6 fires again
    assert kinds == [pb.DECISION_KIND_FIRED, pb.DECISION_KIND_RESOLVED, pb.DECISION_KIND_FIRED]
    # flagged once per request and probe, whatever the number of firings
    assert (
        sample(scorer, "saemon_requests_flagged_total", {"model_name": MODEL, "probe": "e", "severity": "warning"}) == 1
    )


def test_end_resolves_firing_probes_and_records_final_scores(tmp_path, clock):
    scorer = make_engine(tmp_path, clock)
    scorer.apply(batch([summary("r", [0.9, 0.0], 0)]))
    decisions = scorer.apply(batch([], ends=[end("r", pb.FINISH_REASON_LENGTH)]))
    assert [(d.probe, d.kind) for d in decisions] == [("safety_max", pb.DECISION_KIND_RESOLVED)]
    report = scorer.report("r")
    assert report.finished and report.finish_reason == pb.FINISH_REASON_LENGTH
    assert [d.kind for d in report.decisions] == [pb.DECISION_KIND_FIRED, pb.DECISION_KIND_RESOLVED]
    assert sample(scorer, "saemon_requests_scored_total", {"model_name": MODEL}) == 1
    assert sample(scorer, "saemon_probe_score_count", {"model_name": MODEL, "probe": "safety_max"}) == 1
    # (no _sum: the buckets include negative scores, and OpenMetrics then omits it)
    labels = {"model_name": MODEL, "probe": "safety_max"}
    assert sample(scorer, "saemon_probe_score_bucket", {**labels, "le": "0.8"}) == 0
    assert sample(scorer, "saemon_probe_score_bucket", {**labels, "le": "0.9"}) == 1
    # a late row after the end does not reopen the request
    assert scorer.apply(batch([summary("r", [0.95, 0.0], 1)])) == []
    assert scorer.report("r").finished


def test_prompt_and_response_scopes_are_separate(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, probes=[probe("p", "max", scope="prompt"), probe("q", "max")])
    scorer.apply(batch([summary("r", [0.9, 0], 0, n=5, scope=pb.TOKEN_SCOPE_PROMPT)]))
    scorer.apply(batch([summary("r", [0.2, 0], 5)]))
    got = scores(scorer, "r")
    assert (got["p"].score, got["p"].tokens, got["p"].firing) == (pytest.approx(0.9), 5, True)
    assert (got["q"].score, got["q"].tokens, got["q"].firing) == (pytest.approx(0.2), 1, False)
    assert sample(scorer, "saemon_tokens_scored_total", {"model_name": MODEL, "scope": "prompt"}) == 5
    assert sample(scorer, "saemon_tokens_scored_total", {"model_name": MODEL, "scope": "response"}) == 1


def test_idle_requests_are_evicted_and_resolved(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, request_idle_seconds=10)
    scorer.apply(batch([summary("old", [0.9, 0], 0)]))
    clock.now += 6
    scorer.apply(batch([summary("new", [0.1, 0], 0)]))
    clock.now += 5
    decisions = scorer.sweep()
    assert [(d.request_id, d.kind) for d in decisions] == [("old", pb.DECISION_KIND_RESOLVED)]
    assert list(scorer.table.active) == ["new"]
    assert not scorer.report("old").finished  # kept, marked as not properly finished
    assert sample(scorer, "saemon_requests_evicted_total", {"reason": "idle"}) == 1
    assert sample(scorer, "saemon_requests_active") == 1


def test_memory_is_bounded_by_the_caps(tmp_path, clock):
    scorer = make_engine(
        tmp_path, clock, max_active_requests=100, max_finished_requests=50, finished_retention_seconds=60
    )
    for i in range(1_000):
        scorer.apply(batch([summary(f"r{i}", [0.1, 0], 0)]))
    assert len(scorer.table.active) == 100
    assert next(iter(scorer.table.active)) == "r900"  # least recently seen went first
    assert len(scorer.table.finished) == 50
    assert sample(scorer, "saemon_requests_evicted_total", {"reason": "capacity"}) == 900
    clock.now += 61
    scorer.sweep()
    assert len(scorer.table.finished) == 0


@pytest.mark.parametrize(
    "bad, reason",
    [
        (batch([summary("r", [0.1, 0.2], 0)], pack="nope"), "unknown_pack"),
        (batch([summary("r", [0.1, 0.2], 0)], version="2"), "unknown_pack"),
        (batch([summary("r", [0.1, 0.2], 0)], model=""), "malformed"),
        (batch([summary("r", [0.1, 0.2], 0)], model="m" * 300), "malformed"),
        (batch([summary("r", [0.1, 0.2], 0)], model="m\nfake_metric 1"), "malformed"),
        (batch([], ends=[end("")]), "malformed"),
        (batch([], ends=[end("x" * 600)]), "malformed"),
    ],
)
def test_bad_batches_are_rejected_with_a_reason(tmp_path, clock, bad, reason):
    scorer = make_engine(tmp_path, clock)
    with pytest.raises(Rejected) as err:
        scorer.validate(bad)
    assert err.value.reason == reason and str(err.value)


def bad_argmax() -> pb.RequestSummary:
    row = summary("bad", [0.1, 0.2], 5)
    row.argmax_position[0] = -(2**63)
    return row


@pytest.mark.parametrize(
    "bad, reason, problem",
    [
        (summary("bad", [0.1], 0), "malformed", "feature arrays have lengths"),
        (summary("", [0.1, 0.2], 0), "malformed", "request_id is empty"),
        (summary("x" * 600, [0.1, 0.2], 0), "malformed", "too long"),
        (summary("bad", [0.1, 0.2], 0, scope=pb.TOKEN_SCOPE_UNSPECIFIED), "malformed", "scope"),
        (summary("bad", [0.1, 0.2], 0, n=0), "malformed", "num_tokens is 0"),
        (summary("bad", [0.1, 0.2], 0, n=2**32 - 1), "out_of_range", "num_tokens is above"),
        (summary("bad", [0.1, 0.2], -1), "out_of_range", "first_position"),
        (bad_argmax(), "out_of_range", "argmax"),
        (summary("bad", [0.9, 0.2], 0, n=2, counts=[3, 0]), "out_of_range", "count_above"),
        (summary("bad", [math.nan, 0.2], 0), "non_finite", "NaN"),
        (summary("bad", [0.1, 0.2], 0, sums=[math.inf, 0]), "non_finite", "NaN"),
    ],
)
def test_a_bad_row_is_refused_alone_and_the_batchs_good_rows_are_scored(tmp_path, clock, bad, reason, problem):
    scorer = make_engine(tmp_path, clock)
    step = batch([summary("good", [0.9, 0.0], 0), bad, summary("also", [0.2, 0.0], 0)])
    columns = scorer.validate(step)
    assert columns.request_ids == ["good", "also"]
    assert columns.rejected == {reason: 1} and problem in columns.first_error
    scorer.apply(step, columns)
    assert scores(scorer, "good")["safety_max"].score == pytest.approx(0.9)
    assert scores(scorer, "also")["safety_max"].score == pytest.approx(0.2)
    assert scorer.report("bad") is None and scorer.report("x" * 600) is None


def test_reloaded_probe_starts_a_fresh_track(tmp_path, clock):
    scorer = make_engine(tmp_path, clock)
    scorer.apply(batch([summary("r", [0.9, 0], 0)]))
    write_pack(tmp_path, version="2")
    scorer.set_packs(load_pack_dir(tmp_path))
    with pytest.raises(Rejected):
        scorer.validate(batch([summary("r", [0.1, 0], 1)]))  # the old version is gone
    scorer.apply(batch([summary("r", [0.1, 0], 1)], version="2"))
    assert scores(scorer, "r")["safety_max"].score == pytest.approx(0.1)


def test_unscored_positions_are_counted_by_reason_and_lower_the_reports_coverage(tmp_path, clock):
    scorer = make_engine(tmp_path, clock)
    step = batch([summary("r", [0.2, 0.0], 0, n=30, scope=pb.TOKEN_SCOPE_PROMPT)])
    step.unscored.append(pb.UnscoredTokens(request_id="r", reason=pb.UNSCORED_REASON_NOT_SEEN, count=8))
    step.unscored.append(pb.UnscoredTokens(request_id="r", reason=pb.UNSCORED_REASON_RESET, count=2))
    scorer.apply(step, scorer.validate(step))
    last = batch([summary("r", [0.1, 0.0], 40)], ends=[end("r")])
    last.ends[0].prompt_tokens, last.ends[0].response_tokens = 40, 10
    scorer.apply(last, scorer.validate(last))
    report = scorer.report("r")
    assert {(u.reason, u.count) for u in report.unscored} == {
        (pb.UNSCORED_REASON_NOT_SEEN, 8),
        (pb.UNSCORED_REASON_RESET, 2),
    }
    assert report.coverage == pytest.approx(1 - 10 / 50)
    assert sample(scorer, "saemon_tokens_unscored_total", {"model_name": MODEL, "reason": "not_seen"}) == 8
    assert sample(scorer, "saemon_tokens_unscored_total", {"model_name": MODEL, "reason": "reset"}) == 2
    # a request without unscored positions is fully covered
    scorer.apply(batch([summary("q", [0.1, 0.0], 0)], ends=[end("q")]))
    assert scorer.report("q").coverage == 1.0 and not scorer.report("q").unscored


def test_an_unscored_entry_without_a_known_reason_is_refused(tmp_path, clock):
    scorer = make_engine(tmp_path, clock)
    step = batch([summary("r", [0.2, 0.0], 0)])
    step.unscored.append(pb.UnscoredTokens(request_id="r", count=3))
    with pytest.raises(Rejected, match="known reason"):
        scorer.validate(step)


def test_two_packs_batches_of_one_step_count_its_tokens_once(tmp_path, clock):
    write_pack(tmp_path)
    write_pack(
        tmp_path,
        name="second",
        probes=[{"name": "second_max", "concept": "c", "features": ["f0"], "aggregation": "max", "threshold": 0.5}],
    )
    scorer = Scorer(SidecarSettings(), SidecarMetrics(CollectorRegistry()), clock)
    scorer.set_packs(load_pack_dir(tmp_path))
    for pack in ("safety", "second"):
        scorer.apply(batch([summary("r", [0.9, 0.0], 0, n=5, scope=pb.TOKEN_SCOPE_PROMPT)], pack=pack))
        scorer.apply(batch([summary("r", [0.9, 0.0], 5)], pack=pack))
    assert sample(scorer, "saemon_tokens_scored_total", {"model_name": MODEL, "scope": "prompt"}) == 5
    assert sample(scorer, "saemon_tokens_scored_total", {"model_name": MODEL, "scope": "response"}) == 1
    probes = {s.probe for s in scorer.report("r").scores}
    assert "second_max" in probes and len(probes) > 1


def test_only_the_models_this_sidecar_serves_are_accepted(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, model_names=["my-served-name"])
    with pytest.raises(Rejected) as err:
        scorer.validate(batch([summary("r", [0.1, 0.2], 0)], model="someone-elses"))
    assert err.value.reason == "unknown_model" and "sidecar.model_names" in str(err.value)
    # the pack's own model and the listed served name are accepted
    for model in (MODEL, "my-served-name"):
        scorer.validate(batch([summary("r", [0.1, 0.2], 0)], model=model))


def test_the_cap_on_model_names_holds_even_when_the_configuration_is_wrong(tmp_path, clock):
    from monitor.errors import PackError

    write_pack(tmp_path)
    settings = SidecarSettings(model_names=[f"m{i}" for i in range(5)], max_model_names=4)
    scorer = Scorer(settings, SidecarMetrics(CollectorRegistry()), clock)
    with pytest.raises(PackError, match="max_model_names"):
        scorer.set_packs(load_pack_dir(tmp_path))
    assert not scorer.packs.packs


def test_a_flood_of_one_step_ids_evicts_no_live_request_and_no_other_models(tmp_path, clock):
    """Before: 100,001 made-up ids evicted a request that was mid-stream; it was never judged."""
    scorer = make_engine(tmp_path, clock, max_active_requests=100, model_names=["other"])
    scorer.apply(batch([summary("live", [0.1, 0], 0)]))
    scorer.apply(batch([summary("calm", [0.1, 0], 0)], model="other"))
    clock.now += 1
    scorer.apply(batch([summary("live", [0.1, 0], 1)]))  # a second step: live traffic
    for start in range(0, 10_000, 500):
        clock.now += 0.01
        scorer.apply(batch([summary(f"flood{i}", [0.1, 0], 0) for i in range(start, start + 500)]))
    assert "live" in scorer.table.active and "calm" in scorer.table.active
    assert sample(scorer, "saemon_requests_evicted_total", {"reason": "capacity"}) == 10_000 - 99
    assert not sample(scorer, "saemon_requests_unjudged_total", {"model_name": MODEL, "reason": "capacity"})
    scorer.apply(batch([summary("live", [0.9, 0], 2)], ends=[end("live")]))
    assert scores(scorer, "live")["safety_max"].tokens == 3  # judged on every step it sent


def test_a_live_request_evicted_before_its_end_is_reported_unjudged(tmp_path, clock):
    scorer = make_engine(tmp_path, clock, max_active_requests=3, request_idle_seconds=10)
    for step in range(2):
        scorer.apply(batch([summary(f"r{i}", [0.1, 0], step) for i in range(3)]))
        clock.now += 1
    # the cap is full of live requests: a newcomer goes at its first step, no live one
    scorer.apply(batch([summary("late", [0.1, 0], 0)]))
    assert sorted(scorer.table.active) == ["r0", "r1", "r2"]
    assert sample(scorer, "saemon_requests_evicted_total", {"reason": "capacity"}) == 1
    assert not scorer.report("late").decisions  # one step: not a live request yet
    clock.now += 11
    swept = scorer.sweep()
    assert sorted(d.request_id for d in swept if d.kind == pb.DECISION_KIND_UNJUDGED) == ["r0", "r1", "r2"]
    assert [d.kind for d in scorer.report("r0").decisions] == [pb.DECISION_KIND_UNJUDGED]
    assert not scorer.report("r0").finished
    assert sample(scorer, "saemon_requests_unjudged_total", {"model_name": MODEL, "reason": "idle"}) == 3
