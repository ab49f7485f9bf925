"""``saemon sae inspect``: what an SAE is, and how well it fits the target model.

On a few thousand tokens of offline text (the held-out split of monitor.sae.corpus) run
through the target model with HF transformers:

- **fraction of variance explained** at the SAE's layer: 1 - sum|x - x̂|² / sum|x - mean x|²,
  over all tokens and without the rare "massive activation" tokens (norm above
  ``MASSIVE_NORM_RATIO`` times the median), whose variance can dominate the sum and flatter
  the figure: both are reported, with the count of such tokens;
- **L0**: mean number of active latents per token;
- **dead latents**: latents that never fired on the sample (an upper bound on true deadness);
- **LM-loss increase**: next-token cross-entropy with the reconstruction spliced into the
  residual stream at that layer, minus the clean loss;
- the same variance explained at the neighbouring layers, with a warning when the SAE fits
  a neighbour much better than its own layer (an off-by-one between hook conventions:
  ``resid_pre`` of layer L is ``resid_post`` of L-1).

Special tokens (BOS, chat-template markers) are left out of every figure, as the monitor
leaves them out of every score: their huge norms would dominate the variance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from monitor.errors import SaeError
from monitor.sae.activations import load_model
from monitor.sae.corpus import token_sequences
from monitor.sae.sae import SAE

#: A layer "looks off by one" when its own FVE is below this and a neighbour's is at least
#: OFF_BY_ONE_MARGIN higher.
POOR_FVE = 0.6
OFF_BY_ONE_MARGIN = 0.15
#: Tokens whose residual norm exceeds this many times the sample's median norm.
MASSIVE_NORM_RATIO = 10.0


@dataclass
class Inspection:
    format: str
    source: str
    architecture: str
    d_in: int
    d_sae: int
    k: int | None
    hook_point: str | None
    layer: int
    model: str | None
    tokens: int
    fve: float
    fve_without_massive: float
    massive_tokens: int
    l0: float
    dead_fraction: float
    dead_latents: int
    clean_loss: float
    spliced_loss: float
    fve_by_layer: dict[int, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def loss_increase(self) -> float:
        return self.spliced_loss - self.clean_loss

    def to_json(self) -> dict:
        return {**asdict(self), "loss_increase": self.loss_increase}


def residual_layer(sae: SAE, layer: int | None = None) -> int:
    """The decoder layer whose output the SAE reads (resid_pre of L is the output of L-1)."""
    if layer is not None:
        return layer
    if sae.layer is None:
        raise SaeError(f"{sae.source}: the file does not say which layer it reads; pass --layer.")
    if sae.hook_point and "resid_pre" in sae.hook_point:
        return sae.layer - 1
    return sae.layer


def sample_token_ids(tokenizer, tokens: int, sequence_length: int = 256) -> list[list[int]]:
    """About ``tokens`` tokens of the held-out split of the offline corpus (never trained
    on by ``saemon sae train``), as BOS-led sequences."""
    sequences, total = [], 0
    for ids in token_sequences(tokenizer, "eval", tokens, sequence_length):
        sequences.append(ids)
        total += len(ids) - 1
        if total >= tokens:
            break
    return sequences


def fve(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - residual / total)


@torch.no_grad()
def inspect(sae: SAE, model_path: Path, tokens: int = 4096, layer: int | None = None) -> Inspection:
    model, tokenizer, special = load_model(model_path)
    hidden = model.config.hidden_size
    if sae.d_in != hidden:
        raise SaeError(
            f"{sae.source}: d_in {sae.d_in} does not match the model's hidden size {hidden} ({model_path}): "
            "this SAE was trained on another model."
        )
    at = residual_layer(sae, layer)
    layers = model.model.layers
    if not 0 <= at < len(layers):
        raise SaeError(f"{sae.source}: layer {at} is outside the model's {len(layers)} layers; pass --layer.")
    neighbours = [n for n in (at - 1, at, at + 1) if 0 <= n < len(layers)]

    captured: dict[int, torch.Tensor] = {}
    splice: dict[str, torch.Tensor | None] = {"mask": None}

    def recorder(index: int):
        def hook(module, args, output):
            captured[index] = output
            mask = splice["mask"]
            if index == at and mask is not None:
                rows = output[0][mask]
                replaced = output.clone()
                replaced[0][mask] = sae.reconstruct(rows).to(output.dtype)
                return replaced
            return None

        return hook

    handles = [layers[n].register_forward_hook(recorder(n)) for n in neighbours]
    xs: dict[int, list[torch.Tensor]] = {n: [] for n in neighbours}
    clean_nll = spliced_nll = 0.0
    counted = 0
    try:
        for ids in sample_token_ids(tokenizer, tokens):
            input_ids = torch.tensor([ids])
            keep = ~torch.isin(input_ids[0], special)
            splice["mask"] = None
            logits = model(input_ids).logits[0]
            for n in neighbours:
                xs[n].append(captured[n][0][keep])
            splice["mask"] = keep
            spliced = model(input_ids).logits[0]
            targets = input_ids[0, 1:]
            scored = keep[1:]  # predictions of ordinary tokens
            clean_nll += float(torch.nn.functional.cross_entropy(logits[:-1][scored], targets[scored], reduction="sum"))
            spliced_nll += float(
                torch.nn.functional.cross_entropy(spliced[:-1][scored], targets[scored], reduction="sum")
            )
            counted += int(scored.sum())
    finally:
        for handle in handles:
            handle.remove()
    x = torch.cat(xs[at])
    z = sae.encode(x)
    x_hat = sae.decode(z, x)
    norms = x.norm(dim=-1)
    typical = norms <= MASSIVE_NORM_RATIO * norms.median()
    by_layer = {n: fve(torch.cat(xs[n]), sae.reconstruct(torch.cat(xs[n]))) for n in neighbours}
    active = (z > 0).sum(0)
    result = Inspection(
        format=sae.format,
        source=str(sae.source),
        architecture=sae.activation,
        d_in=sae.d_in,
        d_sae=sae.d_sae,
        k=sae.k,
        hook_point=sae.hook_point,
        layer=at,
        model=sae.model,
        tokens=int(x.shape[0]),
        fve=fve(x, x_hat),
        fve_without_massive=fve(x[typical], x_hat[typical]),
        massive_tokens=int((~typical).sum()),
        l0=float((z > 0).sum(-1).float().mean()),
        dead_latents=int((active == 0).sum()),
        dead_fraction=float((active == 0).float().mean()),
        clean_loss=clean_nll / max(counted, 1),
        spliced_loss=spliced_nll / max(counted, 1),
        fve_by_layer=by_layer,
    )
    result.warnings = off_by_one_warnings(at, by_layer)
    if not math.isfinite(result.spliced_loss):
        result.warnings.append("the spliced loss is not finite: the reconstruction breaks the model")
    return result


def off_by_one_warnings(layer: int, by_layer: dict[int, float]) -> list[str]:
    own = by_layer[layer]
    best = max((n for n in by_layer if n != layer), key=lambda n: by_layer[n], default=None)
    if best is not None and own < POOR_FVE and by_layer[best] >= own + OFF_BY_ONE_MARGIN:
        return [
            f"the SAE explains {own:.2f} of the variance at layer {layer} but {by_layer[best]:.2f} at layer {best}: "
            f"its layer looks off by one (resid_pre vs resid_post?). Check the hook point, or pass --layer {best}."
        ]
    return []


def format_report(result: Inspection) -> str:
    lines = [
        f"format         {result.format} ({result.source})",
        f"architecture   {result.architecture}{f' (k={result.k})' if result.k else ''}",
        f"shape          d_in {result.d_in}, d_sae {result.d_sae}",
        f"hook point     {result.hook_point or '-'} -> output of decoder layer {result.layer}",
        f"model          {result.model or '-'}",
        f"sample         {result.tokens} tokens (special tokens excluded)",
        f"explained var  {result.fve:.3f} ({result.fve_without_massive:.3f} without the {result.massive_tokens} "
        f"massive-activation tokens)",
        f"L0             {result.l0:.1f}",
        f"dead latents   {result.dead_latents} ({result.dead_fraction:.1%}) never fired on the sample",
        f"LM loss        {result.clean_loss:.3f} clean, {result.spliced_loss:.3f} spliced "
        f"(+{result.loss_increase:.3f} nats/token)",
        "FVE by layer   " + ", ".join(f"{n}: {v:.3f}" for n, v in sorted(result.fve_by_layer.items())),
    ]
    lines += [f"WARNING        {w}" for w in result.warnings]
    return "\n".join(lines)
