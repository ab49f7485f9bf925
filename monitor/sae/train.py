"""``saemon sae train``: a TopK SAE for the default model, seeded, on CPU, in SAELens format.

Why our own trainer rather than eai-sparsify: sparsify streams HF datasets onto a GPU and
fuses its encoder with Triton; here the corpus is built offline (monitor.sae.corpus), the
machine has two CPU cores and no GPU, and the whole recipe is ~150 lines of torch that run
deterministically from a seed. The recipe follows OpenAI's TopK paper and sparsify:

- activations: residual stream after one decoder layer (HF transformers, float32),
  special tokens left out, held-out texts (every 10th) kept for evaluation;
- inputs scaled so their mean squared norm is d_in during training (the scale is folded
  into the weights when saving, so the saved SAE reads raw activations);
- TopK (ReLU, then the k largest), b_dec initialised at the data mean and subtracted from
  the input, decoder rows kept at unit norm (gradient component along them removed);
- loss: normalised MSE + AuxK (the k_aux largest pre-activations of latents that have not
  fired for ``dead_tokens`` tokens reconstruct the residual, weight 1/32), which is what
  keeps latents from dying;
- Adam, lr 2e-4 / sqrt(d_sae / 2^14), linear decay over the last 20% of steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from monitor import __version__
from monitor.sae.activations import layer_output, load_model
from monitor.sae.corpus import token_sequences
from monitor.sae.sae import SAE

log = logging.getLogger(__name__)

#: Held-out tokens of the quality figures a test recomputes from the shipped files.
QUICK_CHECK_TOKENS = 1024


@dataclass(frozen=True)
class TrainSettings:
    layer: int = 15
    """Decoder layer whose output (resid_post) the SAE reads: the middle of SmolLM2's 30."""
    tokens: int = 500_000
    """Training tokens (special tokens excluded)."""
    d_sae: int = 4096
    """Latents: 7x the 576-wide residual stream (a small file for the repository)."""
    k: int = 32
    """Active latents per token (L0)."""
    epochs: int = 4
    batch_size: int = 4096
    seed: int = 0
    sequence_length: int = 256
    aux_k: int = 256
    aux_coefficient: float = 1 / 32
    dead_tokens: int = 200_000
    """A latent that did not fire for this many tokens counts as dead for AuxK."""
    save_dtype: str = "float16"
    """Weights on disk (halves the file; computation is float32 after loading)."""


def collect(model_path: Path, layer: int, tokens: int, sequence_length: int, split: str) -> torch.Tensor:
    """Residual activations after ``layer`` ([N, d] float16), special tokens left out."""
    model, tokenizer, special = load_model(model_path)
    rows: list[torch.Tensor] = []
    total, started = 0, time.monotonic()
    for ids in token_sequences(tokenizer, split, tokens, sequence_length):
        input_ids = torch.tensor([ids])
        keep = ~torch.isin(input_ids[0], special)
        rows.append(layer_output(model, layer, input_ids)[keep].to(torch.float16))
        total += int(keep.sum())
        if total >= tokens:
            break
    log.info("collected %d %s activations at layer %d in %.0f s", total, split, layer, time.monotonic() - started)
    return torch.cat(rows)[:tokens]


def train(activations: torch.Tensor, settings: TrainSettings) -> tuple[SAE, dict]:
    """Train on ``activations`` [N, d]; returns the SAE (reading raw activations) and a log."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    x_all = activations.to(torch.float32)
    n, d = x_all.shape
    scale = math.sqrt(d) / float(x_all.norm(dim=-1).pow(2).mean().sqrt())
    mean = x_all.mean(0) * scale
    variance = float((x_all * scale - mean).pow(2).sum(-1).mean())

    W_dec = torch.randn(settings.d_sae, d, generator=generator)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_dec = torch.nn.Parameter(W_dec)
    W_enc = torch.nn.Parameter(W_dec.detach().T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(settings.d_sae))
    b_dec = torch.nn.Parameter(mean.clone())
    params = [W_enc, b_enc, W_dec, b_dec]
    lr = 2e-4 / math.sqrt(settings.d_sae / 2**14)
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    steps_per_epoch = n // settings.batch_size
    steps = steps_per_epoch * settings.epochs
    decay_from = int(steps * 0.8)
    since_fired = torch.zeros(settings.d_sae)
    history = []
    started = time.monotonic()
    step = 0
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        for b in range(steps_per_epoch):
            x = x_all[order[b * settings.batch_size : (b + 1) * settings.batch_size]] * scale
            pre = torch.relu((x - b_dec) @ W_enc + b_enc)
            values, indices = pre.topk(settings.k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, indices, values)  # dense: one BLAS matmul beats a gather
            recon = z @ W_dec + b_dec
            error = x - recon
            mse = error.pow(2).sum(-1).mean() / variance
            fired = torch.zeros(settings.d_sae, dtype=torch.bool)
            fired[indices.flatten()] = True
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + x.shape[0])
            dead = since_fired >= settings.dead_tokens
            aux = torch.zeros(())
            if dead.any():
                k_aux = min(settings.aux_k, int(dead.sum()))
                dead_pre = pre.masked_fill(~dead, float("-inf"))
                aux_values, aux_indices = dead_pre.topk(k_aux, dim=-1)
                aux_values = torch.nan_to_num(aux_values.clamp(min=0), neginf=0.0)
                aux_recon = torch.zeros_like(pre).scatter(-1, aux_indices, aux_values) @ W_dec
                aux = (error.detach() - aux_recon).pow(2).sum(-1).mean() / variance
            loss = mse + settings.aux_coefficient * aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep the decoder rows on the unit sphere
                W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
            if step >= decay_from:
                for group in optimizer.param_groups:
                    group["lr"] = lr * (steps - step) / (steps - decay_from)
            optimizer.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=-1, keepdim=True)
            if step % 50 == 0 or step == steps - 1:
                entry = {
                    "step": step,
                    "epoch": epoch,
                    "fvu": float(mse.detach()),
                    "aux": float(aux.detach()),
                    "dead_fraction": float(dead.float().mean()),
                    "seconds": round(time.monotonic() - started, 1),
                }
                history.append(entry)
                log.info(
                    "step %d/%d fvu %.4f aux %.4f dead %.2f%%",
                    step,
                    steps,
                    entry["fvu"],
                    entry["aux"],
                    100 * entry["dead_fraction"],
                )
            step += 1
    with torch.no_grad():  # fold the input scale: the saved SAE reads raw activations
        sae = SAE(
            W_enc=(W_enc * scale).detach().clone(),
            b_enc=b_enc.detach().clone(),
            W_dec=(W_dec / scale).detach().clone(),
            b_dec=(b_dec / scale).detach().clone(),
            activation="topk",
            k=settings.k,
            format="saelens",
            source=Path("."),
        )
    return sae, {"scale_folded": scale, "lr": lr, "steps": steps, "history": history}


def save_saelens(
    sae: SAE, directory: Path, *, model_name: str, layer: int, settings: TrainSettings, extra: dict
) -> Path:
    """Write ``cfg.json`` + ``sae_weights.safetensors`` as SAELens reads them (flat fields,
    so SAELens 4-6 all load it), plus ``training.json`` with the recipe and figures."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[settings.save_dtype]
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(directory / "sae_weights.safetensors"))
    cfg = {
        "architecture": "topk",
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "k": sae.k,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": sae.k},
        "dtype": settings.save_dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "model_name": model_name,
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "hook_layer": layer,
        "hook_head_index": None,
        "prepend_bos": True,
        "context_size": settings.sequence_length,
        "dataset_path": "saemon offline corpus (stdlib docstrings and code, project chats)",
        "saemon_version": __version__,
    }
    (directory / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (directory / "training.json").write_text(json.dumps({"settings": asdict(settings), **extra}, indent=2) + "\n")
    return directory


def run_training(model_path: Path, out: Path, settings: TrainSettings, model_name: str, eval_tokens: int = 8192):
    """Collect, train, save in SAELens format, and measure on held-out text (training.json)."""
    torch.manual_seed(settings.seed)
    activations = collect(model_path, settings.layer, settings.tokens, settings.sequence_length, "train")
    sae, info = train(activations, settings)
    save_saelens(sae, out, model_name=model_name, layer=settings.layer, settings=settings, extra=info)
    return record_quality(out, model_path, eval_tokens)


def record_quality(out: Path, model_path: Path, eval_tokens: int = 8192):
    """Measure the saved SAE on held-out text and record the figures in training.json."""
    from monitor.sae.formats import load_sae
    from monitor.sae.quality import inspect

    saved = load_sae(out)
    result = inspect(saved, model_path, tokens=eval_tokens)
    small = inspect(saved, model_path, tokens=QUICK_CHECK_TOKENS)  # what the test recomputes
    record = json.loads((out / "training.json").read_text())
    for key, figures in (("quality", result), ("quality_quick_check", small)):
        record[key] = {"split": "eval (every 10th corpus text, never trained on)", **figures.to_json()}
        record[key].pop("source", None)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return result
