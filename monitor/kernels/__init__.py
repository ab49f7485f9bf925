"""Step 2, project: residual-stream rows -> per-segment feature summaries.

One dispatcher, :func:`projection`; the reference, the torch path and the Triton kernel
live beside it in :mod:`monitor.kernels.projection`, full-SAE TopK mode in
:mod:`monitor.kernels.topk`.
"""

from monitor.kernels.projection import FeatureBank, Summaries, projection

__all__ = ["FeatureBank", "Summaries", "projection"]
