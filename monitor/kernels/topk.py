"""Full-SAE mode for TopK SAEs (EleutherAI sparsify, OpenAI TopK, SAELens topk).

For ReLU and JumpReLU SAEs a latent's value depends only on its own encoder column, so
the projection computes just the watched latents (``monitor.kernels.projection``). A TopK
latent is non-zero only if it is among the k largest of *all* n latents of its token, so
the watched values need the full encode::

    pre = (x - b_dec) @ W_enc + b_enc          # [T, n]
    z   = relu(pre), keeping the k largest per token and zeroing the rest

What it costs: O(T·d·n) FLOPs (2·d·n per token) and a top-k over n scores per token,
against O(T·d·F) for the watched-latents path, i.e. n/F times the work. With n = 32·d
(sparsify's default width) and F = 16 on SmolLM2 (d 576, n 18432): about 21 MFLOPs per
token instead of 18 kFLOPs, some 8% of the model's own ~270 MFLOPs per token. Memory:
``[chunk, n]`` float32 scores per chunk of rows (4 MiB by default), against ``[chunk, F]``.

This module is the documented torch implementation (any device); there is no Triton
kernel for it yet. A batch-wide top-k (BatchTopK training) is never used at inference: a
request's score must not depend on its neighbours in the batch (BatchTopK SAEs are saved
as JumpReLU and go through the projection).
"""

from __future__ import annotations

import torch

from monitor.kernels.projection import CPU_CHUNK_ELEMENTS, Summaries, summarize_rows


def topk_scores_ref(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor | None,
    k: int,
    watched: torch.Tensor,
) -> torch.Tensor:
    """Float32 values ``[T, F]`` of the ``watched`` latents (indices into n) after the full
    TopK encode of ``x [T, d]`` with ``W_enc [d, n]``, ``b_enc [n]`` and, when the SAE
    subtracts it from its input, ``b_dec [d]``. Ties at the k-th value are broken as
    ``torch.topk`` breaks them."""
    if x.dim() != 2 or W_enc.dim() != 2 or x.shape[1] != W_enc.shape[0]:
        raise ValueError(f"x [T, d] and W_enc [d, n] disagree: {tuple(x.shape)} vs {tuple(W_enc.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    inputs = x.float() if b_dec is None else x.float() - b_dec.float()
    z = (inputs @ W_enc.float() + b_enc.float()).clamp_min(0.0)
    top = z.topk(min(k, z.shape[1]), dim=1)
    kept = torch.zeros_like(z).scatter_(1, top.indices, top.values)
    return kept[:, watched]


def topk_summaries(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor | None,
    k: int,
    watched: torch.Tensor,
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    *,
    out: Summaries | None = None,
    chunk_rows: int | None = None,
) -> Summaries:
    """Per-segment summaries of the watched TopK latents, with the projection's segment
    reduction and contract (``count`` counts values > 0, i.e. tokens where the latent is
    among the k active ones). Rows are encoded ``chunk_rows`` at a time (default: as
    many as fit ``CPU_CHUNK_ELEMENTS`` scores of all n latents)."""

    def scores_of(rows: torch.Tensor) -> torch.Tensor:
        return topk_scores_ref(x.index_select(0, rows), W_enc, b_enc, b_dec, k, watched)

    threshold = torch.zeros(watched.shape[0], device=x.device)
    chunk_rows = chunk_rows or max(1, CPU_CHUNK_ELEMENTS // W_enc.shape[1])
    return summarize_rows(scores_of, seg_starts, row_mask, threshold, out=out, chunk_rows=chunk_rows)
