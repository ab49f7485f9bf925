"""saemon's one SAE type: every supported format loads into this, with its exact semantics.

    z = activation((normalise(x) - b_dec * subtract_b_dec) @ W_enc + b_enc)
    x̂ = denormalise(z @ W_dec + b_dec)

``activation`` is ``relu``, ``jumprelu`` (z = pre where pre > threshold, per latent),
``topk`` (the k largest of relu(pre), the rest 0) or ``gated`` (a ReLU magnitude path
``(x @ (W_enc * exp(r_mag)) + b_mag)`` gated by ``x @ W_enc + b_gate > 0``).
``normalise`` is one of the input normalisations the source libraries use: none, a fixed
scale factor on the input (SAELens ``expected_average_only_in`` with a known factor, Llama
Scope's dataset norm), ``constant_norm_rescale`` (each row to norm sqrt(d_in), undone on
the output) and ``layer_norm`` (undone on the output). Tensors are float32 internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

Activation = Literal["relu", "jumprelu", "topk", "gated"]
Normalisation = Literal["none", "scale", "constant_norm_rescale", "layer_norm"]
LAYER_NORM_EPS = 1e-5  # SAELens' run-time layer norm


@dataclass
class SAE:
    W_enc: Tensor  # [d_in, d_sae]
    b_enc: Tensor  # [d_sae]
    W_dec: Tensor  # [d_sae, d_in]
    b_dec: Tensor  # [d_in]
    activation: Activation
    format: str
    source: Path
    subtract_b_dec: bool = True
    threshold: Tensor | None = None  # jumprelu: [d_sae]
    k: int | None = None  # topk
    b_gate: Tensor | None = None  # gated
    r_mag: Tensor | None = None
    b_mag: Tensor | None = None
    normalisation: Normalisation = "none"
    input_scale: float = 1.0  # "scale": x * input_scale in, x̂ / input_scale out
    output_scale: float | None = None  # "scale": x̂ / output_scale (default input_scale)
    decoder_scale: Tensor | None = None  # SAELens finetuning_scaling_factor: z * s before decoding
    hook_point: str | None = None  # as the source names it
    layer: int | None = None  # decoder layer whose output (residual stream) it reads
    model: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """[..., d_in] -> [..., d_sae] latent activations."""
        x = self._normalise_in(x.to(torch.float32))
        if self.subtract_b_dec:
            x = x - self.b_dec
        if self.activation == "gated":
            assert self.b_gate is not None and self.r_mag is not None and self.b_mag is not None
            gate = (x @ self.W_enc + self.b_gate) > 0
            magnitude = torch.relu(x @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
            return gate.to(magnitude.dtype) * magnitude
        pre = x @ self.W_enc + self.b_enc
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            assert self.threshold is not None
            return pre * (pre > self.threshold).to(pre.dtype)
        assert self.k is not None
        values, indices = torch.relu(pre).topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """[..., d_sae] -> [..., d_in]. Normalisations that depend on the input row
        (constant_norm_rescale, layer_norm) need that input ``x`` to be undone."""
        z = z.to(torch.float32)
        if self.decoder_scale is not None:
            z = z * self.decoder_scale
        out = z @ self.W_dec + self.b_dec
        if self.normalisation == "scale":
            return out / (self.output_scale if self.output_scale is not None else self.input_scale)
        if self.normalisation in ("constant_norm_rescale", "layer_norm"):
            if x is None:
                raise ValueError(f"decode() of an SAE with {self.normalisation} input needs the input x to undo it")
            x = x.to(torch.float32)
            if self.normalisation == "constant_norm_rescale":
                return out * x.norm(dim=-1, keepdim=True) / self.d_in**0.5
            mu = x.mean(dim=-1, keepdim=True)
            std = (x - mu).std(dim=-1, keepdim=True)
            return out * std + mu
        return out

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), x)

    def _normalise_in(self, x: Tensor) -> Tensor:
        if self.normalisation == "scale":
            return x * self.input_scale
        if self.normalisation == "constant_norm_rescale":
            return x * (self.d_in**0.5 / x.norm(dim=-1, keepdim=True))
        if self.normalisation == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
        return x
