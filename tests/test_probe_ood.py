"""The out-of-distribution protocol (`saemon probes eval --held-out`) on pooled means made to
order: sources whose concept lives in known directions, so what a fit on some sources must
and must not find on another is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitor.cli import main
from monitor.errors import ProbeDataError
from monitor.lab import datasets
from monitor.lab.datasets import Example
from monitor.lab.evaluate import auroc
from monitor.lab.ood import bootstrap, format_ood, held_out_sources, pair_auroc, recall_at_fpr, to_json
from monitor.lab.pooling import Pooled
from monitor.lab.train import TrainSettings

SHIPPED = Path(__file__).resolve().parent.parent / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"
D = 6
#: Sources a and b carry the concept along dimension 0; c along dimension 1 only.
DIRECTION = {"a": 0, "b": 0, "c": 1}
SETTINGS = TrainSettings(layers=(3,), with_controls=True)


def make(sources=("a", "b", "c"), per_split=(60, 30, 40), controls=(80, 200), seed=0):
    rng = np.random.default_rng(seed)
    examples, rows = [], []
    for source in sources:
        for split, count in zip(("train", "calib", "test"), per_split, strict=True):
            for k in range(count):
                label = k % 2
                x = rng.normal(0, 1, D)
                x[DIRECTION[source]] += 4.0 * label
                x[2] += {"a": 1.0, "b": -1.0, "c": 0.0}[source]  # each source's own style
                rows.append(x)
                examples.append(
                    Example(text="x", label=label, concept="deception", split=split, meta={"dataset": source})
                )
    for split, count in zip(("train", "test"), controls, strict=True):
        for _ in range(count):
            rows.append(rng.normal(0, 1, D))
            examples.append(Example(text="x", label=0, concept="control", split=split, meta={"dataset": "chat"}))
    n = len(examples)
    pooled = Pooled(owner=np.arange(n), full=np.arange(n), layers={3: np.array(rows, np.float32)})
    return pooled, examples


def test_a_source_whose_concept_lies_elsewhere_is_not_found_by_a_probe_fitted_on_the_others():
    pooled, examples = make()
    report = held_out_sources(pooled, examples, "deception", settings=SETTINGS, resamples=200)
    by_source = {r.source: r for r in report.held_out}
    assert set(by_source) == {"a", "b", "c"}
    # held out a: b teaches dimension 0, which a shares
    assert by_source["a"].trained_on == ("b", "c") and by_source["a"].auroc.value > 0.9
    assert by_source["a"].recall.value > 0.5
    # held out c: a and b teach dimension 0 only; c's concept is along dimension 1
    assert 0.3 < by_source["c"].auroc.value < 0.7
    assert by_source["c"].recall.value < 0.2
    for r in report.held_out:
        assert r.positives == r.negatives == 20 and r.controls == 200 and r.layers == (3,)
        for figure in (r.auroc, r.recall):
            assert figure.low <= figure.value <= figure.high and figure.low < figure.high
    # the cross-source matrix: a fit on a finds b, not c; c finds itself
    assert report.matrix["a"]["b"].value > 0.9 and report.matrix["a"]["c"].value < 0.7
    assert report.matrix["c"]["c"].value > 0.9 and report.matrix["c"]["a"].value < 0.7
    assert report.pooled.trained_on == ("a", "b", "c") and report.pooled.positives == 60
    text = format_ood(report)
    assert "held out" in text and "cross-source AUROC" in text and "recall@1%" in text
    assert to_json(report)["held_out"][2]["auroc"]["value"] == by_source["c"].auroc.value


def test_with_ema_the_same_fits_score_each_response_by_its_ema_vector(tmp_path):
    """The ema vectors are what the folds score: late evidence counts with ema, not with the mean."""
    pooled, examples = make()
    # the concept's direction at the end of each label-1 response only: its ema shows it, its mean half
    pooled.ema = {3: pooled.layers[3].copy()}
    labels = np.array([e.label for e in examples])
    pooled.layers[3][labels == 1, 0] -= 2.0  # the means carry half of the 4.0 shift
    mean = held_out_sources(pooled, examples, "deception", settings=SETTINGS, resamples=50, matrix=False)
    ema_settings = TrainSettings(layers=(3,), with_controls=True, aggregation="ema", ema_alpha=0.2)
    ema = held_out_sources(pooled, examples, "deception", settings=ema_settings, resamples=50, matrix=False)
    assert (mean.aggregation, ema.aggregation) == ("mean", "ema 0.2")
    a_mean, a_ema = (next(r for r in report.held_out if r.source == "a") for report in (mean, ema))
    assert a_ema.auroc.value > a_mean.auroc.value + 0.05
    with pytest.raises(ValueError, match="pool with ema_alpha"):
        held_out_sources(make()[0], examples, "deception", settings=ema_settings, resamples=0)


def test_recall_at_fpr_lets_exactly_that_share_of_controls_fire():
    controls = np.arange(100, dtype=float)  # 1% of 100: one control (99) may be above
    assert recall_at_fpr(np.array([98.5, 99.5, 50.0]), controls, 0.01) == pytest.approx(2 / 3)
    assert recall_at_fpr(np.array([98.5]), controls, 0.0) == 0.0  # none may fire: above 99
    assert recall_at_fpr(np.array([]), controls, 0.01) is None


def test_bootstrap_intervals_narrow_with_more_data_and_are_seeded():
    rng = np.random.default_rng(1)

    def width(n):
        area, _ = bootstrap(rng.normal(1, 1, n), rng.normal(0, 1, n), rng.normal(0, 1, 4 * n), 0.05, 300)
        return area.high - area.low

    assert width(400) < width(25)
    positives, negatives = rng.normal(1, 1, 50).round(1), rng.normal(0, 1, 70).round(1)  # with ties
    assert pair_auroc(positives, negatives) == pytest.approx(
        auroc(np.r_[np.ones(50), np.zeros(70)], np.r_[positives, negatives])
    )
    once = bootstrap(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.5]), np.array([0.0, 0.5]), 0.01, 100, seed=3)
    assert once == bootstrap(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.5]), np.array([0.0, 0.5]), 0.01, 100, seed=3)


def test_data_the_protocol_cannot_use_is_refused_naming_the_fix():
    pooled, examples = make(sources=("a",))
    with pytest.raises(ProbeDataError, match="one source"):
        held_out_sources(pooled, examples, "deception", settings=SETTINGS)
    pooled, examples = make()
    unnamed = [e.model_copy(update={"meta": {}}) if e.concept == "deception" else e for e in examples]
    with pytest.raises(ProbeDataError, match=r"no meta\.dataset"):
        held_out_sources(pooled, unnamed, "deception", settings=SETTINGS)
    no_test_controls = [e for e in examples if not (e.concept == "control" and e.split == "test")]
    pooled, _ = make(controls=(80, 0))
    with pytest.raises(ProbeDataError, match="control"):
        held_out_sources(pooled, no_test_controls, "deception", settings=SETTINGS)
    with pytest.raises(ProbeDataError, match="--fpr"):
        held_out_sources(pooled, examples, "deception", settings=SETTINGS, fpr=1.5)


@pytest.mark.parametrize("method", ["logistic", "all-layers", "diffmean"])
def test_every_method_finds_what_a_shared_direction_teaches_and_not_what_it_does_not(method):
    pooled, examples = make()
    noise = np.random.default_rng(7).normal(0, 1, pooled.layers[3].shape).astype(np.float32)
    pooled.layers[5] = noise  # a second layer that carries nothing
    report = held_out_sources(
        pooled,
        examples,
        "deception",
        settings=TrainSettings(layers=(3, 5)),
        resamples=50,
        matrix=False,
        method=method,
    )
    by_source = {r.source: r for r in report.held_out}
    assert report.method == method and not report.matrix
    assert by_source["a"].auroc.value > 0.85 and 0.3 < by_source["c"].auroc.value < 0.7
    expected = {"logistic": None, "all-layers": (3, 5), "diffmean": (3,)}[method]
    assert expected is None or by_source["a"].layers == expected
    with pytest.raises(ProbeDataError, match="--method"):
        held_out_sources(pooled, examples, "deception", settings=SETTINGS, method="svm")


def test_record_writes_the_held_out_figures_under_the_linear_probe_and_eval_record_keeps_them(tmp_path):
    from synthetic import write_pack

    from monitor.lab.evaluate import ProbeQuality
    from monitor.lab.evaluate import record as record_eval
    from monitor.lab.ood import record
    from monitor.pack import load_pack

    probes = [
        {"name": "deception", "concept": "deception", "features": ["f0"], "aggregation": "mean", "threshold": 1.0},
        {"name": "deception_sae", "concept": "deception", "features": ["f1"], "aggregation": "mean", "threshold": 1.0},
    ]
    pack = write_pack(tmp_path, probes=probes)
    pooled, examples = make()
    report = held_out_sources(pooled, examples, "deception", settings=SETTINGS, resamples=50, matrix=False)
    record(load_pack(pack.path), report)
    saved = load_pack(pack.path)
    held = saved.spec.probes[0].quality.held_out
    assert set(held) == {"a", "b", "c"} and saved.spec.probes[1].quality is None
    c = {r.source: r for r in report.held_out}["c"]
    assert held["c"].auroc == pytest.approx(c.auroc.value, abs=1e-4) and held["c"].fpr == 0.01
    assert held["c"].auroc_interval[0] <= held["c"].auroc <= held["c"].auroc_interval[1]
    # a later `probes eval --record` rewrites the test-split figures and keeps these
    figures = [
        ProbeQuality(p.name, "deception", 1.0, None, 10, 10, 5, 0.9, 0.5, 0.1, 0.0, {}) for p in saved.spec.probes
    ]
    record_eval(saved, figures, "test", {"d.jsonl": "0" * 64})
    again = load_pack(pack.path).spec.probes[0].quality
    assert again.auroc == 0.9 and again.held_out == held
    with pytest.raises(ProbeDataError, match="--method logistic"):
        record(
            saved, held_out_sources(pooled, examples, "deception", settings=SETTINGS, resamples=0, method="diffmean")
        )
    # figures measured with another aggregation than the probe's are refused, naming the one to use
    pooled.ema = {3: pooled.layers[3]}
    ema = TrainSettings(layers=(3,), aggregation="ema", ema_alpha=0.2)
    with pytest.raises(ProbeDataError, match=r"folds its tokens by mean.*--aggregation mean"):
        record(saved, held_out_sources(pooled, examples, "deception", settings=ema, resamples=0, matrix=False))


def test_held_out_through_the_command_line_measures_each_source_and_records_into_a_pack(
    default_model, tmp_path, capsys
):
    import shutil

    from monitor.pack import load_pack

    examples = datasets.generate("deception") + datasets.generate("control")
    small, taken = [], {}
    for e in examples:  # a few pairs per (source, split), and some train and test controls
        slot = (e.concept, e.meta.get("dataset") if e.concept == "deception" else "", e.split)
        if taken.get(slot, 0) < (8 if e.concept == "deception" else 10) and e.split in ("train", "calib", "test"):
            taken[slot] = taken.get(slot, 0) + 1
            small.append(e)
    data = tmp_path / "small.jsonl"
    datasets.write_jsonl(small, data)
    pack = tmp_path / "pack" / "safety.yaml"
    pack.parent.mkdir()
    shutil.copy(SHIPPED, pack)
    shutil.copy(SHIPPED.with_suffix(".safetensors"), pack.with_suffix(".safetensors"))
    args = ["probes", "eval", "--model", str(default_model), "--data", str(data), "--held-out"]
    common = ["--concept", "deception", "--layers", "12", "--resamples", "20", "--json"]
    assert main([*args, *common, "--record", "--pack", str(pack)]) == 0
    report = json.loads(capsys.readouterr().out)
    sources = sorted({e.meta["dataset"] for e in small if e.concept == "deception"})
    assert len(sources) == 7 and [r["source"] for r in report["held_out"]] == sources
    assert report["aggregation"] == "mean"
    for r in report["held_out"]:
        assert r["trained_on"] == [s for s in sources if s != r["source"]]
        assert r["layers"] == [12] and r["controls"] == 10
    held = load_pack(pack).spec.probes[0].quality.held_out
    assert set(held) == set(sources)
    assert held["roleplay"].auroc == pytest.approx(report["held_out"][4]["auroc"]["value"], abs=1e-4)
    assert main([*args, *common, "--pack", str(pack)]) != 0  # --pack without --record: refused, named
    assert "--pack is only where --record writes the figures" in capsys.readouterr().err
