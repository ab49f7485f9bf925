"""Reading SAEs as their source projects write them, into saemon's one SAE type.

Supported here (``load_sae`` detects which from the files):

- **SAELens** (``cfg.json`` + ``sae_weights.safetensors``), configs from before and after
  6.0: architectures ``standard`` (ReLU), ``jumprelu``, ``topk``, ``gated``;
  ``apply_b_dec_to_input``; ``normalize_activations`` none / constant_norm_rescale /
  layer_norm, and expected_average_only_in only with its factor; a fine-tuning
  ``scaling_factor``.
- **Gemma Scope** (``params.npz``: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``,
  ``threshold``): JumpReLU without b_dec subtraction; layer and site from the release's
  folder names (``layer_12/width_16k/average_l0_71``) when present.
- **Gemma Scope 2** (``config.json`` with ``architecture: jump_relu`` and
  ``hf_hook_point_in``, + ``params.safetensors``: ``w_enc``, ``w_dec``, ``b_enc``,
  ``b_dec``, ``threshold``): JumpReLU without b_dec subtraction.
- **EleutherAI sparsify** (``cfg.json`` + ``sae.safetensors``: ``encoder.weight``,
  ``encoder.bias``, ``W_dec``, ``b_dec``): TopK over ReLU pre-activations of x - b_dec;
  the hook point is the folder's name (``layers.6``).
- **Llama Scope** (OpenMOSS lm-saes: ``hyperparams.json`` + ``checkpoints/final.safetensors``
  with ``encoder.*``, ``decoder.*``): dataset-wise norm (x * sqrt(d_model) / norm_in in,
  * norm_out / sqrt(d_model) out), JumpReLU at ``jump_relu_threshold`` in the scaled space,
  b_dec subtracted only with ``apply_decoder_bias_to_pre_encoder``.
- **OpenAI TopK** (``torch.save`` of ``Autoencoder.state_dict()``: ``pre_bias``,
  ``encoder.weight``, ``latent_bias``, ``decoder.weight``, ``activation`` and
  ``activation_state_dict``): x - pre_bias, TopK then ReLU, and, as that code does when
  the activation is TopK, a layer norm of the input that decoding undoes.
- **Goodfire** (``torch.save`` state dict: ``encoder_linear.*``, ``decoder_linear.*``):
  ReLU, no b_dec subtraction.

Pickled files are read with ``torch.load(weights_only=True)``: tensors and plain values
only, never arbitrary objects.

Every refusal names the file, the field and the fix.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import safe_open

from monitor.errors import SaeError
from monitor.sae.sae import SAE, Activation, Normalisation

FORMATS = ("saelens", "gemma_scope", "gemma_scope_2", "sparsify", "llama_scope", "openai", "goodfire")


def load_sae(path: str | Path, format: str | None = None) -> SAE:
    """Load the SAE at ``path`` (a directory, or a Gemma Scope ``params.npz``)."""
    path = Path(path)
    if not path.exists():
        raise SaeError(f"{path}: no such file or directory. Give the SAE's directory (or params.npz).")
    kind = format or detect(path)
    if kind not in FORMATS:
        raise SaeError(f"{path}: unknown SAE format {kind!r}; known formats: {', '.join(FORMATS)}")
    readers = {
        "saelens": _saelens,
        "gemma_scope": _gemma_scope,
        "gemma_scope_2": _gemma_scope_2,
        "sparsify": _sparsify,
        "llama_scope": _llama_scope,
        "openai": _openai,
        "goodfire": _goodfire,
    }
    sae = readers[kind](path)
    _check(sae)
    return sae


def detect(path: Path) -> str:
    """The format of the files at ``path``, from their names (and cfg.json's fields)."""
    directory = path if path.is_dir() else path.parent
    if path.name == "params.npz" or (directory / "params.npz").is_file():
        return "gemma_scope"
    if path.is_file() and path.suffix == ".npz":  # a Gemma Scope file saved under another name
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = {_gemma_name(k) for k in data.files}
        except (OSError, ValueError) as exc:
            raise SaeError(f"{path}: not a readable .npz file ({exc}).") from None
        if keys >= GEMMA_SCOPE_ARRAYS:
            return "gemma_scope"
        raise SaeError(f"{path}: an .npz with arrays {', '.join(sorted(keys)[:8])}: not Gemma Scope's layout.")
    if (directory / "params.safetensors").is_file() and (directory / "config.json").is_file():
        return "gemma_scope_2"
    if (directory / "checkpoints" / "final.safetensors").is_file():
        return "llama_scope"
    if path.is_file() and path.suffix in (".pt", ".pth"):
        keys = set(_read_pickle(path))
        if "encoder_linear.weight" in keys:
            return "goodfire"
        if "pre_bias" in keys and "latent_bias" in keys:
            return "openai"
        raise SaeError(f"{path}: a PyTorch state dict with keys {', '.join(sorted(keys)[:8])}: not a known SAE layout.")
    if (directory / "sae_weights.safetensors").is_file():
        return "saelens"
    if (directory / "sae.safetensors").is_file() and (directory / "cfg.json").is_file():
        return "sparsify"
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise SaeError(
        f"{path}: cannot tell the SAE format from the files ({', '.join(present) or 'none'}). Expected "
        "cfg.json + sae_weights.safetensors (SAELens), params.npz (Gemma Scope), config.json + "
        "params.safetensors (Gemma Scope 2), cfg.json + sae.safetensors (sparsify), hyperparams.json + "
        "checkpoints/final.safetensors (Llama Scope) or a .pt/.pth state dict (OpenAI, Goodfire); or pass "
        "format= explicitly."
    )


# -- SAELens --------------------------------------------------------------------------------


def _saelens(path: Path) -> SAE:
    directory = path if path.is_dir() else path.parent
    cfg_path, weights_path = directory / "cfg.json", directory / "sae_weights.safetensors"
    cfg = _read_json(cfg_path)
    meta = dict(cfg.get("metadata") or {})
    version = meta.get("sae_lens_version") or cfg.get("sae_lens_version")
    pre6 = version is None or _major(version) < 6
    if pre6:  # field names before 6.0
        if "hook_point" in cfg and "hook_name" not in cfg:
            cfg["hook_name"] = cfg["hook_point"]
        if "activation_fn_str" in cfg and "activation_fn" not in cfg:
            cfg["activation_fn"] = cfg["activation_fn_str"]
        if cfg.get("activation_fn") == "topk":
            cfg.setdefault("architecture", "topk")
            cfg.setdefault("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if isinstance(cfg.get("normalize_activations"), bool):
            cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
    architecture = cfg.get("architecture", "standard")
    activations: dict[str, Activation] = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk", "gated": "gated"}
    activation = activations.get(architecture)
    if activation is None:
        raise SaeError(
            f"{cfg_path}: architecture {architecture!r} is not supported (standard, jumprelu, topk, gated). "
            "Convert the SAE to one of those, or export its encoder and decoder as a standard SAE."
        )
    for name in ("d_in", "d_sae"):
        if not isinstance(cfg.get(name), int):
            raise SaeError(f"{cfg_path}: field {name!r} is missing or not an integer; SAELens configs always have it.")
    tensors = _read_safetensors(weights_path)
    need = {"W_enc", "W_dec", "b_dec"} | ({"b_gate", "r_mag", "b_mag"} if activation == "gated" else {"b_enc"})
    if activation == "jumprelu":
        need.add("threshold")
    _require(weights_path, tensors, need)
    if activation == "topk" and not isinstance(cfg.get("k"), int):
        raise SaeError(
            f"{cfg_path}: a topk SAE needs an integer 'k' (SAELens writes it, or activation_fn_kwargs.k before 6.0)."
        )
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise SaeError(
            f"{cfg_path}: rescale_acts_by_decoder_norm is not supported; fold the decoder norms into W_enc and W_dec first."
        )
    normalisation, scale = _saelens_normalisation(cfg, cfg_path)
    decoder_scale = tensors.get("scaling_factor")
    if decoder_scale is not None:
        if torch.allclose(decoder_scale, torch.ones_like(decoder_scale)):
            decoder_scale = None
        elif not cfg.get("finetuning_scaling_factor"):
            raise SaeError(
                f"{weights_path}: has a 'scaling_factor' that is not all ones but {cfg_path.name} says "
                "finetuning_scaling_factor is false: the file is inconsistent. Set finetuning_scaling_factor "
                "to true if the factor was fine-tuned, or remove the tensor."
            )
    hook_name = meta.get("hook_name") or cfg.get("hook_name")
    return SAE(
        W_enc=tensors["W_enc"],
        b_enc=tensors.get("b_enc", torch.zeros(tensors["W_enc"].shape[1])),
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        activation=activation,
        format="saelens",
        source=directory,
        subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)),
        threshold=tensors.get("threshold"),
        k=cfg.get("k") if activation == "topk" else None,
        b_gate=tensors.get("b_gate"),
        r_mag=tensors.get("r_mag"),
        b_mag=tensors.get("b_mag"),
        normalisation=normalisation,
        input_scale=scale,
        decoder_scale=decoder_scale,
        hook_point=hook_name,
        layer=_layer_of(hook_name),
        model=meta.get("model_name") or cfg.get("model_name"),
        metadata={
            "d_in": cfg["d_in"],
            "d_sae": cfg["d_sae"],
            "sae_lens_version": version,
            "architecture": architecture,
        },
    )


def _saelens_normalisation(cfg: dict, cfg_path: Path) -> tuple[Normalisation, float]:
    mode = cfg.get("normalize_activations") or "none"
    if mode == "none":
        return "none", 1.0
    if mode in ("constant_norm_rescale", "layer_norm"):
        return cast(Normalisation, mode), 1.0
    if mode == "expected_average_only_in":
        factor = cfg.get("norm_scaling_factor") or (cfg.get("metadata") or {}).get("norm_scaling_factor")
        if not isinstance(factor, (int, float)) or not factor > 0:
            raise SaeError(
                f"{cfg_path}: normalize_activations is expected_average_only_in but the file has no scale "
                "factor, so inputs cannot be scaled as in training. Add 'norm_scaling_factor' (sqrt(d_in) / "
                "the mean activation norm the SAE was trained on) or fold it into W_enc, W_dec and b_dec."
            )
        return "scale", float(factor)
    raise SaeError(
        f"{cfg_path}: normalize_activations {mode!r} is not supported (none, expected_average_only_in, "
        "constant_norm_rescale, layer_norm)."
    )


# -- Gemma Scope ----------------------------------------------------------------------------


GEMMA_SCOPE_ARRAYS = frozenset({"W_enc", "W_dec", "b_enc", "b_dec", "threshold"})


def _gemma_name(key: str) -> str:
    """Gemma Scope writes W_enc/W_dec; some copies lower-case the w."""
    return "W_" + key[2:] if key.startswith("w_") else key


def _gemma_scope(path: Path) -> SAE:
    npz = path if path.is_file() else path / "params.npz"
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise SaeError(f"{npz}: not a readable .npz file ({exc}).") from None
    tensors = {_gemma_name(k): torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()}
    _require(npz, tensors, set(GEMMA_SCOPE_ARRAYS))
    parts = npz.parts
    layer = next((int(p.removeprefix("layer_")) for p in parts if re.fullmatch(r"layer_\d+", p)), None)
    site = next(
        (
            s
            for p in parts
            for s, tag in (("resid_post", "-res"), ("attn_out", "-att"), ("mlp_out", "-mlp"))
            if p.startswith("gemma-scope") and tag in p
        ),
        None,
    )
    return SAE(
        W_enc=tensors["W_enc"],
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        activation="jumprelu",
        threshold=tensors["threshold"],
        subtract_b_dec=False,
        format="gemma_scope",
        source=npz,
        layer=layer,
        hook_point=f"blocks.{layer}.hook_{site}" if layer is not None and site else None,
        metadata={"release_path": "/".join(parts[-4:])},
    )


def _gemma_scope_2(path: Path) -> SAE:
    directory = path if path.is_dir() else path.parent
    cfg_path, weights_path = directory / "config.json", directory / "params.safetensors"
    cfg = _read_json(cfg_path)
    if cfg.get("architecture") != "jump_relu":
        raise SaeError(f"{cfg_path}: architecture {cfg.get('architecture')!r}; Gemma Scope 2 SAEs are 'jump_relu'.")
    if cfg.get("hf_hook_point_out") or cfg.get("affine_connection"):
        raise SaeError(
            f"{cfg_path}: a transcoder (hf_hook_point_out) maps one site to another; only SAEs are supported."
        )
    tensors = _read_safetensors(weights_path)
    _require(weights_path, tensors, {"w_enc", "w_dec", "b_enc", "b_dec", "threshold"})
    hook = cfg.get("hf_hook_point_in")
    return SAE(
        W_enc=tensors["w_enc"],
        b_enc=tensors["b_enc"],
        W_dec=tensors["w_dec"],
        b_dec=tensors["b_dec"],
        activation="jumprelu",
        threshold=tensors["threshold"],
        subtract_b_dec=False,
        format="gemma_scope_2",
        source=directory,
        hook_point=hook,
        layer=_layer_of(hook),
        model=cfg.get("model_name"),
        metadata={k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool))},
    )


# -- EleutherAI sparsify ----------------------------------------------------------------------


def _sparsify(path: Path) -> SAE:
    directory = path if path.is_dir() else path.parent
    cfg_path, weights_path = directory / "cfg.json", directory / "sae.safetensors"
    cfg = _read_json(cfg_path)
    tensors = _read_safetensors(weights_path)
    _require(weights_path, tensors, {"encoder.weight", "encoder.bias", "W_dec", "b_dec"})
    if cfg.get("activation", "topk") != "topk":
        raise SaeError(f"{cfg_path}: activation {cfg['activation']!r} is not supported; only sparsify's topk is.")
    if cfg.get("transcode") or "W_skip" in tensors or cfg.get("skip_connection"):
        raise SaeError(
            f"{cfg_path}: a transcoder or skip connection is not an SAE of one residual stream; not supported."
        )
    if not isinstance(cfg.get("k"), int) or not isinstance(cfg.get("d_in"), int):
        raise SaeError(f"{cfg_path}: fields 'k' and 'd_in' must be integers (sparsify writes both).")
    hook = directory.name
    return SAE(
        W_enc=tensors["encoder.weight"].T.contiguous(),
        b_enc=tensors["encoder.bias"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        activation="topk",
        k=cfg["k"],
        subtract_b_dec=True,
        format="sparsify",
        source=directory,
        hook_point=hook,
        layer=_layer_of(hook),
        metadata={
            "d_in": cfg["d_in"],
            "num_latents": cfg.get("num_latents"),
            "expansion_factor": cfg.get("expansion_factor"),
        },
    )


# -- Llama Scope (OpenMOSS lm-saes) -------------------------------------------------------------


def _llama_scope(path: Path) -> SAE:
    directory = path if path.is_dir() else path.parent
    cfg_path = next(
        (directory / n for n in ("hyperparams.json", "hyperparameters.json") if (directory / n).is_file()),
        directory / "hyperparams.json",
    )
    cfg = _read_json(cfg_path)
    weights_path = directory / "checkpoints" / "final.safetensors"
    tensors = _read_safetensors(weights_path)
    _require(weights_path, tensors, {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"})
    for name in ("d_model", "d_sae"):
        if not isinstance(cfg.get(name), int):
            raise SaeError(f"{cfg_path}: field {name!r} is missing or not an integer.")
    d_model = cfg["d_model"]
    act_fn = cfg.get("act_fn", "jumprelu")
    if act_fn not in ("jumprelu", "relu"):
        raise SaeError(f"{cfg_path}: act_fn {act_fn!r} is not supported (jumprelu, relu).")
    if cfg.get("hook_point_out", cfg.get("hook_point_in")) != cfg.get("hook_point_in"):
        raise SaeError(f"{cfg_path}: hook_point_out differs from hook_point_in: a transcoder, not an SAE.")
    mode = cfg.get("norm_activation", "dataset-wise")
    normalisation: Normalisation = "none"
    scale_in: float = 1.0
    scale_out: float | None = None
    if mode == "dataset-wise":
        norms = cfg.get("dataset_average_activation_norm") or {}
        if not all(isinstance(norms.get(k), (int, float)) and norms[k] > 0 for k in ("in", "out")):
            raise SaeError(
                f"{cfg_path}: norm_activation is dataset-wise but dataset_average_activation_norm has no positive "
                "'in' and 'out': the scale factor is missing. Add the average activation norms it was trained with."
            )
        normalisation, scale_in, scale_out = "scale", d_model**0.5 / norms["in"], d_model**0.5 / norms["out"]
    elif mode == "token-wise":
        normalisation = "constant_norm_rescale"
    elif mode not in ("inference", "none"):
        raise SaeError(f"{cfg_path}: norm_activation {mode!r} is not supported (dataset-wise, token-wise, inference).")
    threshold = None
    if act_fn == "jumprelu":
        if not isinstance(cfg.get("jump_relu_threshold"), (int, float)):
            raise SaeError(f"{cfg_path}: act_fn is jumprelu but jump_relu_threshold is missing.")
        threshold = torch.full((cfg["d_sae"],), float(cfg["jump_relu_threshold"]))
    hook = cfg.get("hook_point_in")
    return SAE(
        W_enc=tensors["encoder.weight"].T.contiguous(),
        b_enc=tensors["encoder.bias"],
        W_dec=tensors["decoder.weight"].T.contiguous(),
        b_dec=tensors["decoder.bias"],
        activation=act_fn,
        threshold=threshold,
        subtract_b_dec=bool(cfg.get("apply_decoder_bias_to_pre_encoder", False)),
        normalisation=normalisation,
        input_scale=scale_in,
        output_scale=scale_out,
        format="llama_scope",
        source=directory,
        hook_point=hook,
        layer=_layer_of(hook),
        metadata={"d_in": d_model, "d_sae": cfg["d_sae"], "norm_activation": mode},
    )


# -- OpenAI TopK and Goodfire (PyTorch state dicts) ----------------------------------------------


def _openai(path: Path) -> SAE:
    state = _read_pickle(path)
    _require(path, state, {"pre_bias", "encoder.weight", "latent_bias", "decoder.weight"})
    activation = state.get("activation", "ReLU")
    settings = state.get("activation_state_dict") or {}
    if activation == "TopK":
        if not isinstance(settings.get("k"), int):
            raise SaeError(f"{path}: activation is TopK but activation_state_dict has no integer 'k'.")
        if settings.get("postact_fn", "ReLU") != "ReLU":
            raise SaeError(f"{path}: TopK postact_fn {settings['postact_fn']!r} is not supported (ReLU).")
    elif activation != "ReLU":
        raise SaeError(f"{path}: activation {activation!r} is not supported (TopK, ReLU).")
    return SAE(
        W_enc=_tensor(path, state, "encoder.weight").T.contiguous(),
        b_enc=_tensor(path, state, "latent_bias"),
        W_dec=_tensor(path, state, "decoder.weight").T.contiguous(),
        b_dec=_tensor(path, state, "pre_bias"),
        activation="topk" if activation == "TopK" else "relu",
        k=settings.get("k") if activation == "TopK" else None,
        # openai/sparse_autoencoder enables its input layer norm exactly when the activation is TopK.
        normalisation="layer_norm" if activation == "TopK" else "none",
        subtract_b_dec=True,
        format="openai",
        source=path,
        layer=_layer_of_name(path.name),
    )


def _goodfire(path: Path) -> SAE:
    state = _read_pickle(path)
    _require(
        path, state, {"encoder_linear.weight", "encoder_linear.bias", "decoder_linear.weight", "decoder_linear.bias"}
    )
    return SAE(
        W_enc=_tensor(path, state, "encoder_linear.weight").T.contiguous(),
        b_enc=_tensor(path, state, "encoder_linear.bias"),
        W_dec=_tensor(path, state, "decoder_linear.weight").T.contiguous(),
        b_dec=_tensor(path, state, "decoder_linear.bias"),
        activation="relu",
        subtract_b_dec=False,
        format="goodfire",
        source=path,
        layer=_layer_of_name(path.name),
        model=path.name.split("-SAE-")[0] if "-SAE-" in path.name else None,
    )


def _read_pickle(path: Path) -> dict[str, Any]:
    """A torch.save'd dict, read without executing pickled code (weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SaeError(f"{path}: missing.") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for unsafe or bad files
        raise SaeError(
            f"{path}: cannot read it as a plain tensor state dict with weights_only=True ({type(exc).__name__}: "
            f"{str(exc)[:200]}). saemon never unpickles arbitrary objects: re-save the SAE as tensors."
        ) from None
    if not isinstance(state, dict):
        raise SaeError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}.")
    return state


def _tensor(path: Path, state: dict[str, Any], name: str) -> torch.Tensor:
    value = state[name]
    if not isinstance(value, torch.Tensor):
        raise SaeError(f"{path}: {name} is a {type(value).__name__}, expected a tensor.")
    return value.to(torch.float32)


def _layer_of_name(name: str) -> int | None:
    """Goodfire's Llama-3.1-8B-Instruct-SAE-l19.pth, or layer12 / layer_12 in a file name."""
    match = re.search(r"(?:-l|layer_?)(\d+)", name)
    return int(match.group(1)) if match else None


# -- shared checks ----------------------------------------------------------------------------


def _check(sae: SAE) -> None:
    """Shapes agree with each other and with the config; every number is finite."""
    d_in, d_sae = sae.W_enc.shape
    expected = {
        "W_dec": (d_sae, d_in),
        "b_enc": (d_sae,),
        "b_dec": (d_in,),
        "threshold": (d_sae,),
        "b_gate": (d_sae,),
        "r_mag": (d_sae,),
        "b_mag": (d_sae,),
        "decoder_scale": (d_sae,),
    }
    for name, shape in expected.items():
        tensor = getattr(sae, name)
        if tensor is not None and tuple(tensor.shape) != shape:
            raise SaeError(
                f"{sae.source}: {name} has shape {tuple(tensor.shape)}, expected {shape} for W_enc "
                f"{(d_in, d_sae)} (d_in x d_sae): the weights do not belong together."
            )
    for key in ("d_in", "d_sae"):
        declared = sae.metadata.get(key)
        actual = d_in if key == "d_in" else d_sae
        if declared is not None and declared != actual:
            raise SaeError(f"{sae.source}: the config says {key} {declared} but the weights have {actual}.")
    if sae.k is not None and not 0 < sae.k <= d_sae:
        raise SaeError(f"{sae.source}: k {sae.k} must be between 1 and d_sae {d_sae}.")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "r_mag", "b_mag", "decoder_scale"):
        tensor = getattr(sae, name)
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise SaeError(f"{sae.source}: {name} contains NaN or infinite values; the file is corrupt or diverged.")
    if not math.isfinite(sae.input_scale) or sae.input_scale <= 0:
        raise SaeError(f"{sae.source}: input scale {sae.input_scale} must be a positive number.")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except OSError as exc:
        raise SaeError(f"{path}: cannot read it ({exc.strerror}).") from None
    except json.JSONDecodeError as exc:
        raise SaeError(f"{path}: not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise SaeError(f"{path}: expected a JSON object of settings.")
    return value


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key).to(torch.float32) for key in f.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise SaeError(f"{path}: missing; the SAE's weights must sit next to its config.") from None
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise SaeError(f"{path}: not a readable safetensors file ({exc}).") from None


def _require(path: Path, tensors: dict[str, torch.Tensor], names: set[str]) -> None:
    missing = sorted(names - set(tensors))
    if missing:
        raise SaeError(f"{path}: missing tensor(s) {', '.join(missing)} (has {', '.join(sorted(tensors)) or 'none'}).")


def _major(version: str) -> int:
    match = re.match(r"(\d+)", str(version))
    return int(match.group(1)) if match else 0


def _layer_of(hook: str | None) -> int | None:
    """blocks.12.hook_resid_post, layers.12, model.layers.12 -> 12."""
    if not hook:
        return None
    match = re.search(r"(?:blocks|layers)\.(\d+)", hook)
    return int(match.group(1)) if match else None
