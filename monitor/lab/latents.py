"""An SAE's latents as pack features: affine encoder rows the monitor's projection computes.

ReLU and JumpReLU SAEs are exact this way; a TopK SAE becomes JumpReLU at one threshold
(:func:`gate_threshold`), the standard inference conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monitor.errors import ProbeDataError, SaeError
from monitor.lab.datasets import Example
from monitor.lab.scoring import residuals


@dataclass(frozen=True)
class LatentBank:
    """SAE latents as the monitor computes them: ``act(x . W_enc[:, i] + b_i)`` per latent.

    ReLU and JumpReLU SAEs are exact this way. A TopK latent is only non-zero among its
    token's k largest, which needs the full encode; the pack uses the standard inference
    conversion instead (as for BatchTopK): JumpReLU with one threshold, the median k-th
    largest pre-activation on the data (:func:`gate_threshold`)."""

    layer: int
    directions: np.ndarray  # [n, d]
    bias: np.ndarray  # [n]
    activation: str  # relu | jumprelu
    threshold: np.ndarray  # [n]
    sae_name: str

    @property
    def size(self) -> int:
        return self.directions.shape[0]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() @ torch.from_numpy(self.directions).T + torch.from_numpy(self.bias)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        if self.activation == "relu":
            return pre.clamp_min(0.0)
        return torch.where(pre > torch.from_numpy(self.threshold), pre, 0.0)


def latent_bank(sae, name: str, gate: float | None = None) -> LatentBank:
    """The SAE's latents as pack features (affine encoder rows); refuses what the monitor's
    per-latent projection cannot express."""
    if sae.layer is None:
        raise SaeError(f"{sae.source}: the SAE does not say which layer it reads; it cannot become pack features")
    if sae.normalisation not in ("none", "scale"):
        raise SaeError(
            f"{sae.source}: input normalisation {sae.normalisation!r} depends on each token's norm, which the "
            "monitor's per-latent projection does not compute; use an SAE without it (or with a fixed scale)"
        )
    if sae.activation == "gated":
        raise SaeError(f"{sae.source}: gated SAEs cannot be expressed as pack features (gate and magnitude differ)")
    W = sae.W_enc.float() * (sae.input_scale if sae.normalisation == "scale" else 1.0)  # [d, n]
    bias = sae.b_enc.float() - (sae.b_dec.float() @ sae.W_enc.float() if sae.subtract_b_dec else 0.0)
    directions = W.T.contiguous().numpy()
    if sae.activation == "relu":
        return LatentBank(sae.layer, directions, bias.numpy(), "relu", np.zeros(sae.d_sae, np.float32), name)
    if sae.activation == "jumprelu":
        return LatentBank(sae.layer, directions, bias.numpy(), "jumprelu", sae.threshold.float().numpy(), name)
    if gate is None:
        raise ProbeDataError("a TopK SAE needs its gate threshold (gate_threshold) to become pack features")
    return LatentBank(sae.layer, directions, bias.numpy(), "jumprelu", np.full(sae.d_sae, gate, np.float32), name)


def gate_threshold(model, tokenizer, sae, examples: Sequence[Example], limit: int = 400) -> float:
    """For a TopK SAE: the median over response tokens of the k-th largest pre-activation,
    the one threshold that keeps about k latents per token."""
    bank = latent_bank(sae, "gate", gate=0.0)
    sample = list(examples[:: max(1, len(examples) // limit)][:limit])  # spread over every concept
    kth = []
    for item in residuals(model, tokenizer, sample, [bank.layer]):
        pre = bank.pre_activations(item.rows[("response", bank.layer)])
        kth.append(pre.topk(sae.k, dim=1).values[:, -1])
    return float(torch.cat(kth).median().clamp_min(0.0))
