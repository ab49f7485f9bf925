"""`saemon sae inspect` on the default model with SAEs whose figures are known by construction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from monitor.errors import SaeError
from monitor.sae import load_sae
from monitor.sae.quality import inspect, off_by_one_warnings

HIDDEN = 576


def saelens_dir(directory: Path, w_enc, w_dec, layer: int, hook: str = "resid_post") -> Path:
    directory.mkdir(parents=True)
    d_in, d_sae = w_enc.shape
    save_file(
        {"W_enc": w_enc, "b_enc": np.zeros(d_sae, np.float32), "W_dec": w_dec, "b_dec": np.zeros(d_in, np.float32)},
        str(directory / "sae_weights.safetensors"),
    )
    (directory / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "d_in": d_in,
                "d_sae": d_sae,
                "dtype": "float32",
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "metadata": {"sae_lens_version": "6.5.1", "hook_name": f"blocks.{layer}.hook_{hook}"},
            }
        )
    )
    return directory


def exact(tmp_path: Path, layer: int = 14, hook: str = "resid_post") -> Path:
    """x = relu(x) - relu(-x): reconstructs every vector exactly."""
    eye = np.eye(HIDDEN, dtype=np.float32)
    return saelens_dir(
        tmp_path / f"exact-{hook}", np.concatenate([eye, -eye], 1), np.concatenate([eye, -eye], 0), layer, hook
    )


def test_an_exact_sae_explains_everything_and_costs_no_loss(tmp_path, default_model):
    result = inspect(load_sae(exact(tmp_path)), default_model, tokens=384)
    assert result.tokens > 300 and result.layer == 14  # special tokens of the chat texts are not counted
    assert result.fve == pytest.approx(1.0, abs=1e-5)
    assert abs(result.loss_increase) < 1e-3 and 1.0 < result.clean_loss < 8.0
    assert result.l0 == pytest.approx(HIDDEN, abs=1)  # one of each +/- pair per dimension
    assert result.dead_latents < 20 and result.warnings == []


def test_a_useless_sae_explains_nothing_and_hurts_the_model(tmp_path, default_model):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((HIDDEN, 64)).astype(np.float32) * 0.01
    result = inspect(
        load_sae(saelens_dir(tmp_path / "bad", w, np.zeros((64, HIDDEN), np.float32), 10)), default_model, tokens=256
    )
    assert result.fve < 0 and result.loss_increase > 1.0


def test_resid_pre_reads_the_previous_layers_output(tmp_path, default_model):
    result = inspect(load_sae(exact(tmp_path, layer=15, hook="resid_pre")), default_model, tokens=128)
    assert result.layer == 14 and set(result.fve_by_layer) == {13, 14, 15}


def test_off_by_one_is_flagged_only_when_a_neighbour_fits_much_better():
    (warning,) = off_by_one_warnings(10, {9: 0.85, 10: 0.35, 11: 0.3})
    assert "layer 10 but 0.85 at layer 9" in warning and "--layer 9" in warning
    assert off_by_one_warnings(10, {9: 0.8, 10: 0.75, 11: 0.7}) == []
    assert off_by_one_warnings(10, {9: 0.2, 10: 0.1, 11: 0.2}) == []


def test_an_sae_for_another_model_is_refused(tmp_path, default_model):
    small = saelens_dir(tmp_path / "small", np.zeros((32, 8), np.float32), np.zeros((8, 32), np.float32), 3)
    with pytest.raises(SaeError, match="d_in 32 does not match the model's hidden size 576"):
        inspect(load_sae(small), default_model, tokens=64)


def test_the_cli_prints_json(tmp_path, default_model):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "sae",
            "inspect",
            str(exact(tmp_path)),
            "--model",
            str(default_model),
            "--tokens",
            "64",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["format"] == "saelens" and figures["fve"] > 0.999 and "loss_increase" in figures


def test_browse_shows_each_latents_strongest_tokens_with_their_context(tmp_path, default_model):
    from monitor.sae.activations import layer_output, load_model
    from monitor.sae.browse import format_reports, top_contexts
    from monitor.sae.corpus import token_sequences

    sae = load_sae(exact(tmp_path))
    (report,) = top_contexts(sae, default_model, [7], tokens=600, contexts=4)
    assert 0 < report.fired <= report.tokens and len(report.contexts) == 4
    values = [c.value for c in report.contexts]
    assert values == sorted(values, reverse=True) and report.max_value == values[0]
    # Each shown value is the latent's activation at that token, recomputed independently.
    model, tokenizer, _ = load_model(default_model)
    sequences = list(token_sequences(tokenizer, "eval", 600, 256))
    for context in report.contexts:
        x = layer_output(model, 14, torch.tensor([sequences[context.sequence]]))
        assert float(x[context.position, 7]) == pytest.approx(context.value, rel=1e-4)  # latent 7 = relu(x_7)
        assert "⟦" in context.text and "⟧" in context.text
    assert "latent 7: fired on" in format_reports([report])
    with pytest.raises(SaeError, match="out of range"):
        top_contexts(sae, default_model, [5000], tokens=10)
