"""The residual-stream tap: fixed-address buffers the model's forward writes into.

The buffers are allocated once for the most rows a step can have, so under CUDA graphs the
captured copy keeps writing to the same addresses on every replay. ``calls`` counts forwards
that wrote (where the wrapper runs as Python, i.e. without full CUDA graphs): a step that ran
the model but left it unchanged means the tap is not in the model (for example a compile
cache built without it), and the plugin fails loudly instead of reporting nothing.
"""

from __future__ import annotations

import torch


class Tap:
    def __init__(
        self,
        layers: tuple[int, ...],
        max_tokens: int,
        hidden_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.layers = tuple(sorted(set(layers)))
        #: [layers, max_tokens, hidden]: every tapped layer in one tensor, so a step's rows of
        #: all layers are one view (the projection reads them with one batched matmul).
        self.stacked = torch.zeros(len(self.layers), max_tokens, hidden_size, dtype=dtype, device=device)
        self.buffers = {layer: self.stacked[i] for i, layer in enumerate(self.layers)}
        self.calls = 0
        self.rows = 0

    def capture(self, aux: list[torch.Tensor]) -> None:
        """Called from the forward with the residual after each tapped layer, in layer order."""
        if len(aux) != len(self.layers):
            raise RuntimeError(
                f"saemon tap: the model returned {len(aux)} aux hidden states for layers "
                f"{self.layers}; something else (EAGLE-3?) also set aux layers."
            )
        rows = aux[0].shape[0]
        for layer, tensor in zip(self.layers, aux, strict=True):
            self.buffers[layer][:rows].copy_(tensor)
        self.calls += 1
        self.rows = rows

    def rows_of(self, layer: int, count: int) -> torch.Tensor:
        return self.buffers[layer][:count]

    def all_rows(self, count: int) -> torch.Tensor:
        """[layers, count, hidden]: the first ``count`` rows of every tapped layer (a view)."""
        return self.stacked[:, :count]
