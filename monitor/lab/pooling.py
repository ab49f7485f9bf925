"""Examples to the vectors probes are fitted on: running means over each response.

One forward pass per batch of examples (:func:`monitor.lab.scoring.residuals`, the token view
the monitor scores) gives each example's residual rows at the wanted layers; their running
means at a few prefix lengths and over the whole response are what a ``mean``-aggregated
probe scores at those points. With an SAE's latents (:class:`monitor.lab.latents.LatentBank`)
the latents' running means, peaks and peak positions come from the same pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from monitor.errors import ProbeDataError
from monitor.lab.datasets import Example
from monitor.lab.latents import LatentBank
from monitor.lab.scoring import residuals

#: Tokens a response needs before a probe may fire: a mean over fewer moves too much per token.
MIN_TOKENS = 4


@dataclass
class Pooled:
    """Running means over each example's response tokens, at a few prefix lengths and the
    whole response: rows ``[R, d]`` per layer (SAE latents ``[R, n]``); ``owner[r]`` is the
    example of row ``r``, ``full[i]`` the row of example ``i``'s whole-response mean."""

    owner: np.ndarray
    full: np.ndarray
    layers: dict[int, np.ndarray] = field(default_factory=dict)
    latents: np.ndarray | None = None
    latent_peaks: np.ndarray | None = None  # [N, n] max over the response tokens
    latent_peak_positions: np.ndarray | None = None  # [N, n] absolute position of that max
    #: With ``ema_alpha``: per layer ``[N, d]``, each example's exponential moving average over
    #: its response tokens at the end, as the monitor's ``ema`` aggregation folds them (a
    #: linear probe's ema-aggregated score is ``ema . w + b``).
    ema: dict[int, np.ndarray] = field(default_factory=dict)


def ema_weights(n: int, alpha: float) -> torch.Tensor:
    """The weight of each of ``n`` tokens in the monitor's ema at the end of the response:
    the first token starts it (``ema = x0``), then ``ema <- ema * (1 - alpha) + x * alpha``."""
    keep = (1.0 - alpha) ** torch.arange(n - 1, -1, -1, dtype=torch.float64)  # (1-a)^(n-1-t)
    weights = alpha * keep
    weights[0] = keep[0]
    return weights


def prefix_lengths(n: int, min_tokens: int, prefixes: int) -> list[int]:
    """The running-mean lengths sampled for an ``n``-token response: up to ``prefixes``
    evenly spaced from ``min_tokens`` (where the monitor may first fire), always ``n``."""
    if prefixes <= 0 or n <= min_tokens:
        return [n]
    return sorted({round(v) for v in np.linspace(min_tokens, n, prefixes)} | {n})


def pool(
    model,
    tokenizer,
    examples: Sequence[Example],
    layers: Sequence[int],
    latents: LatentBank | None = None,
    prefixes: int = 0,
    min_tokens: int = MIN_TOKENS,
    ema_alpha: float | None = None,
) -> Pooled:
    """Running means at ``layers`` and, with ``latents`` (a :class:`LatentBank`), the
    latents' running means, peaks and peak positions at the SAE's layer, in one forward pass;
    with ``ema_alpha``, each example's ema at the end of its response as well."""
    wanted = set(layers) | ({latents.layer} if latents is not None else set())
    n = len(examples)
    rows: dict[int, list[np.ndarray]] = {layer: [None] * n for layer in layers}  # type: ignore[list-item]
    ema = {layer: np.zeros((n, model.config.hidden_size), np.float32) for layer in layers} if ema_alpha else {}
    latent_rows: list = [None] * n
    owners: list = [None] * n
    peaks = np.zeros((n, latents.size), np.float32) if latents is not None else None
    peak_positions = np.zeros((n, latents.size), np.int32) if latents is not None else None
    for item in residuals(model, tokenizer, examples, sorted(wanted)):
        count = len(item.positions["response"])
        if not count:
            raise ProbeDataError(f"example {item.index} has no response tokens to score (empty final turn?)")
        ends = torch.tensor(prefix_lengths(count, min_tokens, prefixes)) - 1

        def running(values: torch.Tensor, ends: torch.Tensor = ends) -> np.ndarray:
            return (values.cumsum(0)[ends] / (ends + 1).unsqueeze(1)).numpy()

        for layer in layers:
            rows[layer][item.index] = running(item.rows[("response", layer)])
        if ema_alpha:
            weights = ema_weights(count, ema_alpha)
            for layer in layers:
                ema[layer][item.index] = (weights @ item.rows[("response", layer)].double()).numpy()
        if latents is not None:
            z = latents.values(item.rows[("response", latents.layer)])
            latent_rows[item.index] = running(z)
            peak, where = z.max(0)
            assert peaks is not None and peak_positions is not None  # allocated above when latents is given
            peaks[item.index] = peak.numpy()
            peak_positions[item.index] = item.positions["response"][where.numpy()]
        owners[item.index] = np.full(len(ends), item.index)
    owner = np.concatenate(owners)
    full = np.flatnonzero(np.r_[owner[1:] != owner[:-1], True])  # the last row of each example
    return Pooled(
        owner=owner,
        full=full,
        layers={layer: np.concatenate(rows[layer]).astype(np.float32) for layer in layers},
        latents=np.concatenate(latent_rows).astype(np.float32) if latents is not None else None,
        latent_peaks=peaks,
        latent_peak_positions=peak_positions,
        ema=ema,
    )
