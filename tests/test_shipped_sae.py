"""The SAE shipped for the default model: its files load, and its recorded quality figures
are recomputed from the files on the same held-out tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.sae import load_sae
from monitor.sae.quality import inspect
from monitor.sae.train import QUICK_CHECK_TOKENS

SHIPPED = Path(__file__).resolve().parent.parent / "saes" / "SmolLM2-135M-Instruct" / "topk-l15-4k"


def test_the_shipped_sae_loads_as_saelens_for_the_default_model():
    sae = load_sae(SHIPPED)
    assert (sae.format, sae.activation, sae.d_in, sae.layer) == ("saelens", "topk", 576, 15)
    assert sae.model == "SmolLM2-135M-Instruct" and sae.hook_point == "blocks.15.hook_resid_post"


def test_its_recorded_quality_is_what_the_files_give(default_model):
    record = json.loads((SHIPPED / "training.json").read_text())
    expected = record["quality_quick_check"]
    result = inspect(load_sae(SHIPPED), default_model, tokens=QUICK_CHECK_TOKENS)
    assert result.tokens == expected["tokens"]
    assert result.fve == pytest.approx(expected["fve"], abs=2e-3)
    assert result.fve_without_massive == pytest.approx(expected["fve_without_massive"], abs=2e-3)
    assert result.l0 == pytest.approx(expected["l0"], abs=0.05) and result.l0 <= record["settings"]["k"]
    assert result.dead_latents == pytest.approx(expected["dead_latents"], abs=3)
    assert result.loss_increase == pytest.approx(expected["loss_increase"], abs=5e-3)
    # The full held-out figures (8192 tokens) are the ones bench/RESULTS.md reports.
    assert record["quality"]["tokens"] >= 8000
