"""SAE files laid out as their source projects write them, loaded by load_sae, checked
against an independent numpy computation of each project's published formula."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from monitor.errors import SaeError
from monitor.sae import detect, load_sae

D_IN, D_SAE = 16, 48
RNG = np.random.default_rng(0)
X = RNG.standard_normal((7, D_IN)).astype(np.float32) * 3


def weights(scale: float = 0.4) -> dict[str, np.ndarray]:
    return {
        "W_enc": (RNG.standard_normal((D_IN, D_SAE)) * scale).astype(np.float32),
        "b_enc": (RNG.standard_normal(D_SAE) * 0.1).astype(np.float32),
        "W_dec": (RNG.standard_normal((D_SAE, D_IN)) * scale).astype(np.float32),
        "b_dec": (RNG.standard_normal(D_IN) * 0.2).astype(np.float32),
    }


def relu(a):
    return np.maximum(a, 0.0)


def topk(pre: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest ReLU'd pre-activations of each row."""
    acts = relu(pre)
    out = np.zeros_like(acts)
    idx = np.argsort(-acts, axis=-1)[:, :k]
    np.put_along_axis(out, idx, np.take_along_axis(acts, idx, axis=-1), axis=-1)
    return out


def close(sae, x, z_expected, x_hat_expected):
    z = sae.encode(torch.from_numpy(x))
    np.testing.assert_allclose(z.numpy(), z_expected, rtol=1e-4, atol=1e-4)
    x_hat = sae.decode(z, torch.from_numpy(x))
    np.testing.assert_allclose(x_hat.numpy(), x_hat_expected, rtol=1e-4, atol=1e-4)


# -- SAELens ------------------------------------------------------------------------------------


def saelens_v6(directory: Path, architecture: str, tensors: dict, **cfg) -> Path:
    """As SAELens >= 6 saves: cfg.json (metadata nested) + sae_weights.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architecture": architecture,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.5.1",
            "sae_lens_training_version": "6.5.1",
            "model_name": "SmolLM2-135M-Instruct",
            "hook_name": "blocks.14.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
            "dataset_path": "local",
            "context_size": 128,
        },
        **cfg,
    }
    (directory / "cfg.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "sae_weights.safetensors"))
    return directory


def test_saelens_standard_relu_subtracts_b_dec_and_keeps_metadata(tmp_path):
    w = weights()
    sae = load_sae(saelens_v6(tmp_path / "std", "standard", w))
    assert (sae.format, sae.d_in, sae.d_sae, sae.layer) == ("saelens", D_IN, D_SAE, 14)
    assert sae.hook_point == "blocks.14.hook_resid_post" and sae.model == "SmolLM2-135M-Instruct"
    z = relu((X - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])


def test_saelens_jumprelu_without_b_dec_subtraction(tmp_path):
    w = {**weights(), "threshold": np.abs(RNG.standard_normal(D_SAE)).astype(np.float32)}
    sae = load_sae(saelens_v6(tmp_path / "jr", "jumprelu", w, apply_b_dec_to_input=False))
    pre = X @ w["W_enc"] + w["b_enc"]
    z = pre * (pre > w["threshold"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])


def test_saelens_topk_keeps_k_latents(tmp_path):
    w = weights()
    sae = load_sae(saelens_v6(tmp_path / "tk", "topk", w, k=5))
    z = topk((X - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 5)
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])
    assert (sae.encode(torch.from_numpy(X)) > 0).sum(-1).max() <= 5


def test_saelens_gated_shares_the_encoder_between_gate_and_magnitude(tmp_path):
    w = weights()
    del w["b_enc"]
    w |= {name: (RNG.standard_normal(D_SAE) * 0.3).astype(np.float32) for name in ("b_gate", "r_mag", "b_mag")}
    sae = load_sae(saelens_v6(tmp_path / "gated", "gated", w))
    x = X - w["b_dec"]
    gate = (x @ w["W_enc"] + w["b_gate"]) > 0
    z = gate * relu(x @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])


def test_saelens_before_6_reads_old_field_names_and_run_time_normalisations(tmp_path):
    w = weights()
    directory = tmp_path / "old"
    directory.mkdir()
    # A 3.x/4.x config: hook_point, activation_fn_str, boolean-less normalisation name.
    (directory / "cfg.json").write_text(
        json.dumps(
            {
                "model_name": "gpt2",
                "hook_point": "blocks.3.hook_resid_pre",
                "hook_point_layer": 3,
                "d_in": D_IN,
                "d_sae": D_SAE,
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 3},
                "apply_b_dec_to_input": True,
                "normalize_activations": "constant_norm_rescale",
                "dtype": "float32",
                "device": "cpu",
                "context_size": 128,
                "sae_lens_training_version": "3.13.0",
            }
        )
    )
    save_file(w, str(directory / "sae_weights.safetensors"))
    sae = load_sae(directory)
    assert (sae.activation, sae.k, sae.layer, sae.normalisation) == ("topk", 3, 3, "constant_norm_rescale")
    coeff = np.sqrt(D_IN) / np.linalg.norm(X, axis=-1, keepdims=True)
    z = topk((X * coeff - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 3)
    close(sae, X, z, (z @ w["W_dec"] + w["b_dec"]) / coeff)


def test_saelens_layer_norm_input_and_fine_tuned_scaling_factor(tmp_path):
    w = {**weights(), "scaling_factor": (1 + RNG.random(D_SAE)).astype(np.float32)}
    sae = load_sae(
        saelens_v6(tmp_path / "ln", "standard", w, normalize_activations="layer_norm", finetuning_scaling_factor=True)
    )
    mu = X.mean(-1, keepdims=True)
    std = (X - mu).std(-1, ddof=1, keepdims=True)
    z = relu(((X - mu) / (std + 1e-5) - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    close(sae, X, z, ((z * w["scaling_factor"]) @ w["W_dec"] + w["b_dec"]) * std + mu)


def test_saelens_half_precision_weights_load_as_float32(tmp_path):
    w = {k: v.astype(np.float16) for k, v in weights().items()}
    sae = load_sae(saelens_v6(tmp_path / "half", "standard", w, dtype="float16"))
    assert sae.W_enc.dtype == torch.float32
    f = {k: v.astype(np.float32) for k, v in w.items()}
    z = relu((X - f["b_dec"]) @ f["W_enc"] + f["b_enc"])
    close(sae, X, z, z @ f["W_dec"] + f["b_dec"])


# -- Gemma Scope ------------------------------------------------------------------------------


def test_gemma_scope_params_npz_is_jumprelu_on_the_raw_input(tmp_path):
    directory = tmp_path / "gemma-scope-2b-pt-res" / "layer_12" / "width_16k" / "average_l0_71"
    directory.mkdir(parents=True)
    w = {**weights(), "threshold": np.abs(RNG.standard_normal(D_SAE)).astype(np.float32)}
    np.savez(directory / "params.npz", **w)
    assert detect(directory) == "gemma_scope"
    sae = load_sae(directory / "params.npz")
    assert (sae.layer, sae.hook_point, sae.subtract_b_dec) == (12, "blocks.12.hook_resid_post", False)
    pre = X @ w["W_enc"] + w["b_enc"]  # Gemma Scope's JumpReLU: no b_dec subtraction
    z = pre * (pre > w["threshold"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])


def test_a_gemma_scope_file_under_another_name_is_known_by_its_arrays(tmp_path):
    w = {**weights(), "threshold": np.abs(RNG.standard_normal(D_SAE)).astype(np.float32)}
    np.savez(tmp_path / "layer12-16k.npz", **w)
    assert detect(tmp_path / "layer12-16k.npz") == "gemma_scope"
    sae = load_sae(tmp_path / "layer12-16k.npz")
    pre = X @ w["W_enc"] + w["b_enc"]
    z = pre * (pre > w["threshold"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(SaeError, match="not Gemma Scope's layout"):
        detect(tmp_path / "other.npz")


def test_gemma_scope_2_config_and_safetensors_are_jumprelu_on_the_raw_input(tmp_path):
    directory = tmp_path / "gemma-scope-2-1b-pt" / "resid_post" / "layer_7_width_16k_l0_medium"
    directory.mkdir(parents=True)
    w = weights()
    tensors = {
        "w_enc": w["W_enc"],
        "w_dec": w["W_dec"],
        "b_enc": w["b_enc"],
        "b_dec": w["b_dec"],
        "threshold": np.abs(RNG.standard_normal(D_SAE)).astype(np.float32),
    }
    save_file(tensors, str(directory / "params.safetensors"))
    (directory / "config.json").write_text(
        json.dumps(
            {
                "architecture": "jump_relu",
                "model_name": "gemma-v3-1b-pt",
                "hf_hook_point_in": "model.layers.7.output",
                "width": 16384,
                "l0": 40,
            }
        )
    )
    sae = load_sae(directory)
    assert (sae.format, sae.layer, sae.hook_point, sae.model) == (
        "gemma_scope_2",
        7,
        "model.layers.7.output",
        "gemma-v3-1b-pt",
    )
    pre = X @ w["W_enc"] + w["b_enc"]
    z = pre * (pre > tensors["threshold"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])


def test_llama_scope_scales_by_the_dataset_norm_and_thresholds_in_that_space(tmp_path):
    directory = tmp_path / "Llama3_1-8B-Base-LXR-8x" / "Llama3_1-8B-Base-L15R-8x"
    (directory / "checkpoints").mkdir(parents=True)
    w = weights()
    save_file(
        {
            "encoder.weight": np.ascontiguousarray(w["W_enc"].T),
            "encoder.bias": w["b_enc"],
            "decoder.weight": np.ascontiguousarray(w["W_dec"].T),
            "decoder.bias": w["b_dec"],
        },
        str(directory / "checkpoints" / "final.safetensors"),
    )
    norm_in, norm_out, theta = 9.5, 7.25, 0.3
    (directory / "hyperparams.json").write_text(
        json.dumps(
            {
                "d_model": D_IN,
                "d_sae": D_SAE,
                "use_decoder_bias": True,
                "apply_decoder_bias_to_pre_encoder": False,
                "act_fn": "jumprelu",
                "jump_relu_threshold": theta,
                "norm_activation": "dataset-wise",
                "dataset_average_activation_norm": {"in": norm_in, "out": norm_out},
                "top_k": 50,
                "hook_point_in": "blocks.15.hook_resid_post",
                "hook_point_out": "blocks.15.hook_resid_post",
            }
        )
    )
    sae = load_sae(directory)
    assert (sae.format, sae.layer, sae.subtract_b_dec) == ("llama_scope", 15, False)
    pre = (X * np.sqrt(D_IN) / norm_in) @ w["W_enc"] + w["b_enc"]
    z = pre * (pre > theta)
    close(sae, X, z, (z @ w["W_dec"] + w["b_dec"]) * norm_out / np.sqrt(D_IN))


def test_openai_topk_state_dict_layer_norms_the_input_and_undoes_it(tmp_path):
    w = weights()
    state = {
        "pre_bias": torch.from_numpy(w["b_dec"]),
        "latent_bias": torch.from_numpy(w["b_enc"]),
        "encoder.weight": torch.from_numpy(np.ascontiguousarray(w["W_enc"].T)),
        "decoder.weight": torch.from_numpy(np.ascontiguousarray(w["W_dec"].T)),
        "stats_last_nonzero": torch.zeros(D_SAE, dtype=torch.long),
        "activation": "TopK",
        "activation_state_dict": {"k": 4, "postact_fn": "ReLU"},
    }
    torch.save(state, tmp_path / "layer_8.pt")
    sae = load_sae(tmp_path / "layer_8.pt")
    assert (sae.format, sae.k, sae.layer, sae.normalisation) == ("openai", 4, 8, "layer_norm")
    mu = X.mean(-1, keepdims=True)
    std = (X - mu).std(-1, ddof=1, keepdims=True)
    pre = ((X - mu) / (std + 1e-5) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    z = topk(pre, 4)
    close(sae, X, z, (z @ w["W_dec"] + w["b_dec"]) * std + mu)


def test_goodfire_state_dict_is_a_plain_relu_sae(tmp_path):
    w = weights()
    state = {
        "encoder_linear.weight": torch.from_numpy(np.ascontiguousarray(w["W_enc"].T)),
        "encoder_linear.bias": torch.from_numpy(w["b_enc"]),
        "decoder_linear.weight": torch.from_numpy(np.ascontiguousarray(w["W_dec"].T)),
        "decoder_linear.bias": torch.from_numpy(w["b_dec"]),
    }
    torch.save(state, tmp_path / "Llama-3.1-8B-Instruct-SAE-l19.pth")
    sae = load_sae(tmp_path / "Llama-3.1-8B-Instruct-SAE-l19.pth")
    assert (sae.format, sae.layer, sae.model) == ("goodfire", 19, "Llama-3.1-8B-Instruct")
    z = relu(X @ w["W_enc"] + w["b_enc"])
    close(sae, X, z, z @ w["W_dec"] + w["b_dec"])


def test_pickles_with_code_are_refused_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"encoder_linear.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(SaeError, match="weights_only=True"):
        load_sae(tmp_path / "evil.pth")


# -- EleutherAI sparsify ---------------------------------------------------------------------


def test_sparsify_topk_of_relu_on_centered_input(tmp_path):
    directory = tmp_path / "checkpoint" / "layers.6"
    directory.mkdir(parents=True)
    enc = (RNG.standard_normal((D_SAE, D_IN)) * 0.4).astype(np.float32)  # nn.Linear(d_in, num_latents)
    tensors = {
        "encoder.weight": enc,
        "encoder.bias": (RNG.standard_normal(D_SAE) * 0.1).astype(np.float32),
        "W_dec": (RNG.standard_normal((D_SAE, D_IN)) * 0.4).astype(np.float32),
        "b_dec": (RNG.standard_normal(D_IN) * 0.2).astype(np.float32),
    }
    save_file(tensors, str(directory / "sae.safetensors"))
    (directory / "cfg.json").write_text(
        json.dumps(
            {
                "activation": "topk",
                "expansion_factor": 3,
                "normalize_decoder": True,
                "num_latents": 0,
                "k": 6,
                "multi_topk": False,
                "skip_connection": False,
                "transcode": False,
                "d_in": D_IN,
            }
        )
    )
    sae = load_sae(directory)
    assert (sae.format, sae.layer, sae.hook_point, sae.k) == ("sparsify", 6, "layers.6", 6)
    pre = relu((X - tensors["b_dec"]) @ enc.T + tensors["encoder.bias"])
    idx = np.argsort(-pre, axis=-1)[:, :6]
    top = np.take_along_axis(pre, idx, axis=-1)
    # sparsify's decode: the top activations times their decoder rows, plus b_dec.
    x_hat = np.einsum("tk,tkd->td", top, tensors["W_dec"][idx]) + tensors["b_dec"]
    z = np.zeros_like(pre)
    np.put_along_axis(z, idx, top, axis=-1)
    close(sae, X, z, x_hat)


# -- refusals ---------------------------------------------------------------------------------


def refusal(tmp_path, name, mutate, match, architecture="standard", **cfg):
    w = weights()
    if architecture == "jumprelu":
        w["threshold"] = np.ones(D_SAE, np.float32)
    mutate(w)
    directory = saelens_v6(tmp_path / name, architecture, w, **cfg)
    with pytest.raises(SaeError, match=match):
        load_sae(directory)


def test_bad_files_are_refused_naming_the_file_the_field_and_the_fix(tmp_path):
    refusal(
        tmp_path,
        "shape",
        lambda w: w.update(W_dec=w["W_dec"][:, :-1].copy()),
        r"W_dec has shape \(48, 15\), expected \(48, 16\)",
    )
    refusal(tmp_path, "nan", lambda w: w["b_enc"].__setitem__(3, np.nan), "b_enc contains NaN")
    refusal(
        tmp_path,
        "arch",
        lambda w: None,
        "architecture 'matryoshka_batchtopk' is not supported",
        architecture="matryoshka_batchtopk",
    )
    refusal(
        tmp_path,
        "scale",
        lambda w: None,
        "expected_average_only_in but the file has no scale factor",
        normalize_activations="expected_average_only_in",
    )
    refusal(
        tmp_path,
        "finetune",
        lambda w: w.update(scaling_factor=np.full(D_SAE, 2.0, np.float32)),
        "'scaling_factor' that is not all ones but cfg.json says finetuning_scaling_factor is false",
    )
    refusal(
        tmp_path, "threshold", lambda w: w.pop("threshold"), r"missing tensor\(s\) threshold", architecture="jumprelu"
    )
    refusal(tmp_path, "topk", lambda w: None, "a topk SAE needs an integer 'k'", architecture="topk")
    refusal(tmp_path, "declared", lambda w: None, "the config says d_sae 99 but the weights have 48", d_sae=99)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaeError, match="cannot tell the SAE format"):
        load_sae(tmp_path / "empty")
    with pytest.raises(SaeError, match="no such file"):
        load_sae(tmp_path / "nowhere")
    lama = tmp_path / "llama" / "checkpoints"
    lama.mkdir(parents=True)
    save_file(
        dict(
            {
                "encoder.weight": np.zeros((D_SAE, D_IN), np.float32),
                "encoder.bias": np.zeros(D_SAE, np.float32),
                "decoder.weight": np.zeros((D_IN, D_SAE), np.float32),
                "decoder.bias": np.zeros(D_IN, np.float32),
            }.items()
        ),
        str(lama / "final.safetensors"),
    )
    (lama.parent / "hyperparams.json").write_text(
        json.dumps({"d_model": D_IN, "d_sae": D_SAE, "jump_relu_threshold": 0.1, "norm_activation": "dataset-wise"})
    )
    with pytest.raises(SaeError, match="dataset_average_activation_norm has no positive 'in' and 'out'"):
        load_sae(lama.parent)
    broken = saelens_v6(tmp_path / "json", "standard", weights())
    (broken / "cfg.json").write_text("{not json")
    with pytest.raises(SaeError, match=r"cfg.json: not valid JSON"):
        load_sae(broken)


def test_an_expected_average_scale_factor_in_the_config_is_applied(tmp_path):
    w = weights()
    sae = load_sae(
        saelens_v6(
            tmp_path / "scaled",
            "standard",
            w,
            normalize_activations="expected_average_only_in",
            norm_scaling_factor=0.25,
        )
    )
    z = relu((X * 0.25 - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    close(sae, X, z, (z @ w["W_dec"] + w["b_dec"]) / 0.25)
