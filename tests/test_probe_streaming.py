"""`saemon probes eval --streaming`: the monitor's running score traced per token, and recall
at a control FPR against the number of response tokens seen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitor.cli import main
from monitor.lab import datasets
from monitor.lab.streaming import best_so_far

SHIPPED = Path(__file__).resolve().parent.parent / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"


def test_best_so_far_starts_at_min_tokens_and_stops_at_the_tokens_seen():
    running = [9.0, 1.0, 2.0, 5.0, 3.0]
    assert best_so_far(running, 2, None) == 5.0  # the first token is not eligible
    assert best_so_far(running, 2, 3) == 2.0
    assert best_so_far(running, 1, 1) == 9.0
    assert best_so_far(running, 4, 64) == 5.0  # a shorter response counts whole
    assert best_so_far(running[:2], 4, None) == float("-inf")  # never eligible


def test_streaming_recall_grows_with_tokens_seen_and_the_trace_ends_at_the_final_score(default_model, tmp_path, capsys):
    from monitor.lab.scoring import score_examples
    from monitor.pack import load_pack
    from monitor.sae.activations import load_model

    examples = datasets.generate("deception") + datasets.generate("control")
    test = [e for e in examples if e.split == "test"]
    small = [e for e in test if e.concept == "deception"][:24] + [e for e in test if e.concept == "control"][:30]
    data = tmp_path / "small.jsonl"
    datasets.write_jsonl(small, data)
    args = ["probes", "eval", "--model", str(default_model), "--pack", str(SHIPPED), "--data", str(data)]
    assert main([*args, "--streaming", "--json", "--resamples", "30"]) == 0
    report = {p["probe"]: p for p in json.loads(capsys.readouterr().out)["probes"]}
    assert {"deception", "deception_sae"} <= set(report)
    for probe in ("deception", "deception_sae"):
        points = report[probe]["points"]
        assert [p["tokens"] for p in points] == [4, 8, 16, 32, 64, None]
        recalls = [p["recall"]["value"] for p in points]
        assert recalls == sorted(recalls)  # one threshold, and the best-so-far only grows
        assert report[probe]["positives"] == 12 and report[probe]["controls"] == 30
        assert all(p["recall"]["low"] <= p["recall"]["value"] <= p["recall"]["high"] for p in points)

    model, tokenizer, _ = load_model(default_model)
    pack = load_pack(SHIPPED)
    traced = score_examples(model, tokenizer, pack, small[:3], trace=True)
    plain = score_examples(model, tokenizer, pack, small[:3])
    for with_trace, without in zip(traced, plain, strict=True):
        for name, result in with_trace.items():
            assert result.running is not None and len(result.running) == result.tokens
            assert result.running[-1] == pytest.approx(result.final)
            assert without[name].running is None and without[name].score == result.score
            assert np.isfinite(result.running).all()
