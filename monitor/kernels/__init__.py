"""Step 2, project: residual-stream rows -> per-segment feature summaries.

One dispatcher, :func:`projection` (one layer's bank), and :func:`project_layers` (a
pack's banks for several layers, fused into one matmul on the CPU); the reference, the torch path and the Triton kernel
live beside it in :mod:`monitor.kernels.projection`, full-SAE TopK mode in
:mod:`monitor.kernels.topk`.
"""

from monitor.kernels.projection import (
    FeatureBank,
    LayerBanks,
    Summaries,
    project_layers,
    projection,
    summarize_segments,
    token_scores,
)

__all__ = [
    "FeatureBank",
    "LayerBanks",
    "Summaries",
    "project_layers",
    "projection",
    "summarize_segments",
    "token_scores",
]
