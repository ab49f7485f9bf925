"""Probe packs end to end: training and calibration on the default model, the shipped packs'
recorded figures reproduced by `saemon probes eval`, and packs refused on the wrong model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import REPO

from monitor.cli import main
from monitor.lab import datasets
from monitor.lab.calibrate import calibrate
from monitor.lab.datasets import CONTROL
from monitor.lab.scoring import score_examples
from monitor.pack import FeatureSpec, ModelBinding, PackSpec, ProbeSpec, load_pack, save_pack
from monitor.sae.activations import load_model

SHIPPED = REPO / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"
SAE = REPO / "saes" / "SmolLM2-135M-Instruct" / "topk-l15-4k"


def subset(examples, per_split: dict[str, int], concept: str) -> list:
    """The first N examples of each split of a concept, pairs kept together."""
    chosen = []
    for split, count in per_split.items():
        chosen += [e for e in examples if e.concept == concept and e.split == split][:count]
    return chosen


def test_calibration_flags_the_stated_fraction_of_controls(default_model, tmp_path):
    model, tokenizer, _ = load_model(default_model)
    controls = subset(datasets.control(), {"calib": 100, "test": 0}, CONTROL)
    rng = np.random.default_rng(5)  # a direction whose top control scores do not all tie
    spec = PackSpec(
        pack="c",
        version="1",
        weights="c.safetensors",
        model=ModelBinding(name="SmolLM2-135M-Instruct", hidden_size=576, num_layers=30),
        features=[FeatureSpec(name="f", layer=10)],
        probes=[
            ProbeSpec(name="p", concept="deception", features=["f"], aggregation="mean", threshold=0.0, min_tokens=3)
        ],
    )
    pack = save_pack(
        spec, rng.normal(size=(1, 576)).astype(np.float32) / 24, np.zeros(1, np.float32), tmp_path / "c.yaml"
    )
    scores = sorted((r["p"].score for r in score_examples(model, tokenizer, pack, controls)), reverse=True)
    # conversations sharing a template share their first tokens, so running-mean maxima can
    # tie: the most that may fire is 5 of 100, fewer where the 5th and 6th scores are equal
    allowed = 5
    while allowed and scores[allowed - 1] == scores[allowed]:
        allowed -= 1
    assert allowed >= 3
    _, report = calibrate(model, tokenizer, pack, controls, fpr=0.05)
    assert report[0].controls == 100 and report[0].flagged == allowed
    reloaded = load_pack(tmp_path / "c.yaml")
    assert reloaded.spec.probes[0].target_fpr == 0.05
    assert reloaded.spec.probes[0].threshold == pytest.approx(report[0].threshold)
    # the monitor's own decisions at the written threshold
    fired = [r["p"].fired for r in score_examples(model, tokenizer, reloaded, controls)]
    assert sum(fired) == allowed


def test_train_writes_a_calibrated_measured_pack(default_model, tmp_path, capsys):
    data = tmp_path / "data"
    deception = subset(datasets.deception(), {"train": 120, "calib": 40, "test": 40}, "deception")
    controls = subset(datasets.control(), {"train": 30, "calib": 100, "test": 30}, CONTROL)
    datasets.write_jsonl(deception, data / "deception.jsonl")
    datasets.write_jsonl(controls, data / "control.jsonl")
    out = tmp_path / "packs" / "mini.yaml"
    code = main(
        [
            "probes",
            "train",
            "--model",
            str(default_model),
            "--data",
            str(data / "deception.jsonl"),
            "--data",
            str(data / "control.jsonl"),
            "--concept",
            "deception",
            "--layers",
            "4,8",
            "--sae",
            str(SAE),
            "--latents",
            "4",
            "--out",
            str(out),
            "--pack-name",
            "mini",
            "--severity",
            "deception=critical",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "FPR ctl" in printed and f"wrote {out}" in printed
    pack = load_pack(out)
    probes = {p.name: p for p in pack.spec.probes}
    assert set(probes) == {"deception", "deception_sae"}
    linear, sae = probes["deception"], probes["deception_sae"]
    assert {f.layer for f in pack.spec.features if f.source == "linear_probe"} <= {4, 8}
    assert len(sae.features) == 4 and len(sae.weights) == 4
    latents = [f for f in pack.spec.features if f.name in sae.features]
    assert all(
        f.source == "sae_latent" and f.layer == 15 and f.sae == SAE.name and f.activation == "jumprelu" for f in latents
    )
    for probe in (linear, sae):
        assert probe.target_fpr == 0.01 and probe.severity == "critical" and probe.scope == "response"
        assert probe.quality.split == "test" and probe.quality.examples == 40 and probe.quality.controls == 30
        assert set(probe.quality.data_sha256) == {"deception.jsonl", "control.jsonl"}
    # an SAE latent's direction is its encoder column, bias folded with b_dec
    from monitor.sae import load_sae

    sae_file = load_sae(SAE)
    index = pack.feature_index[latents[0].name]
    np.testing.assert_allclose(pack.directions[index], sae_file.W_enc[:, latents[0].latent].numpy(), rtol=1e-6)


def test_discover_ranks_latents_with_their_contexts(default_model, tmp_path, capsys):
    data = tmp_path / "deception.jsonl"
    datasets.write_jsonl(subset(datasets.deception(), {"train": 80}, "deception"), data)
    code = main(
        [
            "probes",
            "discover",
            "--model",
            str(default_model),
            "--data",
            str(data),
            "--concept",
            "deception",
            "--sae",
            str(SAE),
            "--top",
            "5",
            "--select",
            "3",
            "--contexts",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 80 and report["layer"] == 15 and report["activation"] == "jumprelu"
    aurocs = [row["auroc"] for row in report["latents"]]
    assert len(aurocs) == 5 and aurocs == sorted(aurocs, reverse=True) and aurocs[0] > 0.5
    assert len(report["selected"]) == 3
    shown = [c for row in report["latents"] for c in row["contexts"]]
    assert shown and all("⟦" in c["text"] and c["value"] > 0 for c in shown)


@pytest.fixture(scope="module")
def shipped():
    return load_pack(SHIPPED)


def test_shipped_pack_has_a_linear_and_an_sae_probe_per_concept_with_figures(shipped):
    assert shipped.spec.model == ModelBinding(name="SmolLM2-135M-Instruct", hidden_size=576, num_layers=30)
    by_concept: dict[str, set[str]] = {}
    features = {f.name: f for f in shipped.spec.features}
    for probe in shipped.spec.probes:
        kinds = {features[name].source for name in probe.features}
        by_concept.setdefault(probe.concept, set()).update(kinds)
        assert probe.target_fpr == 0.01 and probe.aggregation == "mean" and probe.scope == "response"
        q = probe.quality
        assert None not in (q.auroc, q.recall_at_threshold, q.fpr_at_threshold, q.negative_fpr_at_threshold)
        assert q.split == "test" and q.examples > 300 and q.controls > 100
    assert by_concept == {"deception": {"linear_probe", "sae_latent"}, "insecure_code": {"linear_probe", "sae_latent"}}
    # the safetensors holds only the watched directions
    assert shipped.directions.shape == (len(shipped.spec.features), 576)


@pytest.mark.slow
def test_eval_reproduces_the_figures_recorded_in_the_shipped_pack(shipped, default_model, tmp_path, capsys):
    """Regenerate the data (same bytes as when the pack was measured), score the test split
    through the monitor's code, and compare with the YAML."""
    written = datasets.generate_all(tmp_path)
    recorded = shipped.spec.probes[0].quality.data_sha256
    assert {f"{c}.jsonl": sha for c, (_, _, sha) in written.items()} == recorded
    files = [str(path) for path, _, _ in written.values()]
    args = ["probes", "eval", "--model", str(default_model), "--pack", str(SHIPPED), "--json"]
    assert main(args + [x for f in files for x in ("--data", f)]) == 0
    report = {p["probe"]: p for p in json.loads(capsys.readouterr().out)["probes"]}
    for probe in shipped.spec.probes:
        q, got = probe.quality, report[probe.name]
        assert got["positives"] + got["negatives"] == q.examples and got["controls"] == q.controls
        assert got["auroc"] == pytest.approx(q.auroc, abs=1e-3), probe.name
        assert got["recall"] == pytest.approx(q.recall_at_threshold, abs=2e-3), probe.name
        assert got["control_fpr"] == pytest.approx(q.fpr_at_threshold, abs=2e-3), probe.name
        assert got["negative_fpr"] == pytest.approx(q.negative_fpr_at_threshold, abs=2e-3), probe.name
        for name, value in (q.by_dataset or {}).items():
            assert got["by_dataset"][name] == pytest.approx(value, abs=1e-3), (probe.name, name)


def test_a_pack_is_refused_on_a_model_of_another_shape(default_model, tmp_path, capsys):
    """A checkpoint with another hidden size and layer count (a real, tiny Llama)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = tmp_path / "tiny-llama"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(tiny)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (default_model / name).exists():
            shutil.copy(default_model / name, tiny / name)
    data = tmp_path / "control.jsonl"
    datasets.write_jsonl(subset(datasets.control(), {"test": 2}, CONTROL), data)
    code = main(["probes", "eval", "--model", str(tiny), "--pack", str(SHIPPED), "--data", str(data)])
    assert code == 2
    error = capsys.readouterr().err
    assert "hidden size 576 != the model's 64" in error and "30 layers != the model's 2" in error
    assert str(SHIPPED) in error and "made for SmolLM2-135M-Instruct" in error
