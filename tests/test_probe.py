"""The probe rule (monitor/probe.py) on its own: what a step's summaries do to a probe's
score, when it fires and resolves, what is judged at the end, and that "fired" is exactly
"judged score >= threshold", the property calibration relies on."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import write_pack

from monitor.pack import load_pack
from monitor.probe import FIRED, RESOLVED, ProbeTracks, Step, Transition, probe_groups
from monitor.proto.saemon.v1 import monitor_pb2 as pb


def group_of(tmp_path, probes, features=None):
    pack = load_pack(write_pack(tmp_path, probes=probes, features=features).path)
    return probe_groups(pack)[pb.TOKEN_SCOPE_RESPONSE]


def step(position: int, values, n: int = 1, sums=None, counts=None) -> Step:
    values = np.asarray(values, dtype=np.float32)
    return Step(
        position,
        n,
        values,
        np.full(values.shape, position + n - 1, dtype=np.int64),
        np.asarray(sums if sums is not None else values * n, dtype=np.float32),
        np.asarray(counts if counts is not None else (values > 0.5).astype(np.uint32)),
    )


def probe(name="p", **fields):
    return {"name": name, "concept": "deception", "features": ["f0"], "threshold": 0.8, **fields}


def test_a_running_probe_fires_after_min_tokens_resolves_below_the_hysteresis_and_fires_again(tmp_path):
    tracks = ProbeTracks(group_of(tmp_path, [probe(aggregation="ema", ema_alpha=1.0, min_tokens=2, hysteresis=0.2)]))
    seen = [tracks.observe(step(i, [v, 0.0])) for i, v in enumerate([0.9, 0.9, 0.7, 0.5, 0.85])]
    assert seen == [[], [Transition(0, FIRED, True)], [], [Transition(0, RESOLVED)], [Transition(0, FIRED, False)]]
    assert tracks.close() == [Transition(0, RESOLVED)]
    assert tracks.judged[0] == pytest.approx(0.9)


def test_an_end_probe_is_judged_once_on_the_final_score(tmp_path):
    tracks = ProbeTracks(group_of(tmp_path, [probe(aggregation="mean", decide="end", min_tokens=3)]))
    assert [tracks.observe(step(i, [v, 0.0])) for i, v in enumerate([2.0, 0.5, 0.5])] == [[], [], []]
    assert tracks.judged[0] == pytest.approx(1.0)
    assert tracks.close() == [Transition(0, FIRED, True), Transition(0, RESOLVED)]
    assert tracks.fired[0] and not tracks.firing[0]


def test_an_evicted_request_resolves_what_fires_and_judges_nothing(tmp_path):
    group = group_of(tmp_path, [probe("run"), probe("end", decide="end")])
    tracks = ProbeTracks(group)
    assert tracks.observe(step(0, [0.9, 0.0])) == [Transition(0, FIRED, True)]
    assert tracks.close(judge=False) == [Transition(0, RESOLVED)]
    assert not tracks.fired[1]


def test_too_few_tokens_are_never_judged(tmp_path):
    tracks = ProbeTracks(group_of(tmp_path, [probe("run", min_tokens=5), probe("end", decide="end", min_tokens=5)]))
    for i in range(4):
        assert tracks.observe(step(i, [5.0, 0.0])) == []
    assert tracks.close() == [] and tracks.judged.tolist() == [-np.inf, -np.inf]


def test_a_weighted_probe_scores_the_intercept_plus_its_weighted_feature_means(tmp_path):
    tracks = ProbeTracks(
        group_of(tmp_path, [probe(features=["f0", "f1"], weights=[2.0, -1.0], intercept=0.5, aggregation="mean")])
    )
    tracks.observe(step(0, [1.0, 3.0], n=2, sums=[1.0, 4.0]))
    tracks.observe(step(2, [0.5, 0.0], sums=[0.5, 0.0]))
    assert tracks.scores()[0] == pytest.approx(0.5 + 2.0 * 1.5 / 3 - 1.0 * 4.0 / 3)
    contributions = tracks.contributions(0)
    assert [c.feature for c in contributions] == ["f0", "f1"]
    assert [c.score for c in contributions] == pytest.approx([0.5, 4.0 / 3])
    assert [c.peak_value for c in contributions] == [1.0, 3.0]


def test_window_count_counts_tokens_above_the_feature_threshold_in_the_last_window(tmp_path):
    tracks = ProbeTracks(group_of(tmp_path, [probe(aggregation="window_count", window_tokens=3, threshold=2.5)]))
    scores = []
    for i, above in enumerate([1, 1, 0, 1, 1, 1, 0, 0, 0]):
        tracks.observe(step(i, [0.9 if above else 0.1, 0.0]))
        scores.append(tracks.scores()[0])
    assert scores == [1, 2, 2, 2, 2, 3, 2, 1, 0]


def test_the_strongest_tokens_are_kept_per_probe_with_their_feature(tmp_path):
    tracks = ProbeTracks(group_of(tmp_path, [probe(features=["f0", "f1"])]))
    for i, values in enumerate([[0.1, 0.2], [0.9, 0.3], [0.4, 0.8], [0.0, 0.05], [0.7, 0.1], [0.2, 0.6]]):
        tracks.observe(step(10 + i, values))
    (score,) = tracks.to_protos()
    assert [(t.position, t.feature) for t in score.top_tokens] == [
        (11, "f0"),
        (12, "f1"),
        (14, "f0"),
        (15, "f1"),
        (10, "f1"),
    ]
    assert score.peak_position == 11


@pytest.mark.parametrize("seed", range(5))
def test_fired_is_exactly_judged_at_or_above_the_threshold(tmp_path, seed):
    """Over random score sequences, for every aggregation and both decide modes."""
    rng = np.random.default_rng(seed)
    probes = [
        probe(
            f"{aggregation}_{decide}",
            aggregation=aggregation,
            decide=decide,
            min_tokens=3,
            hysteresis=0.1,
            threshold=0.55,
        )
        for aggregation in ("max", "mean", "ema")
        for decide in ("running", "end")
    ]
    group = group_of(tmp_path / str(seed), probes)
    for _ in range(20):
        tracks = ProbeTracks(group)
        fired = np.zeros(len(group), dtype=bool)
        for i in range(int(rng.integers(1, 12))):
            for transition in tracks.observe(step(i, [rng.uniform(0, 1), 0.0])):
                fired[transition.probe] |= transition.kind == FIRED
        judged = tracks.judged
        for transition in tracks.close():
            fired[transition.probe] |= transition.kind == FIRED
        np.testing.assert_array_equal(fired, judged >= group.threshold)


@pytest.mark.parametrize("alpha", [0.1, 0.35, 1.0])
def test_the_pooled_ema_weights_are_the_monitors_ema_at_the_end(tmp_path, alpha):
    """What `probes train --aggregation ema` and `eval --held-out --aggregation ema` score
    offline (the ema vector of a response, then . w + b) is the sidecar's ema fold."""
    from monitor.lab.pooling import ema_weights

    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, 9)
    tracks = ProbeTracks(group_of(tmp_path, [probe(aggregation="ema", ema_alpha=alpha, decide="end")]))
    for i, v in enumerate(values):
        tracks.observe(step(i, [v, 0.0]))
    weights = ema_weights(len(values), alpha).numpy()
    assert weights.sum() == pytest.approx(1.0)
    assert float(weights @ values) == pytest.approx(float(tracks.scores()[0]), abs=1e-5)
