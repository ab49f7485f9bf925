"""The logits processor that ends flagged requests (see :mod:`monitor.vllm.act`).

Loaded by vLLM in every engine through the ``vllm.logits_processors`` entry point; it does
nothing until the abort rule flags a request, then forces that request's end-of-sequence
token at its next sampled token.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from monitor.vllm import act


class StopFlagged(LogitsProcessor):
    """Forces end-of-sequence for the requests the abort rule flagged."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        #: persistent-batch index -> the request's EOS token id
        self.eos: dict[int, int | None] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it changes what greedy decoding picks

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        for index in batch_update.removed:
            self.eos.pop(index, None)
        for index, params, _, _ in batch_update.added:
            self.eos[index] = params.eos_token_id
        for a, b, direction in batch_update.moved:
            moved = self.eos.pop(a, None)
            if direction == MoveDirectionality.SWAP:
                other = self.eos.pop(b, None)
                if other is not None:
                    self.eos[a] = other
            if moved is not None:
                self.eos[b] = moved

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not act.has_stopping():
            return logits
        flagged = act.stopping()
        for row, request_id in enumerate(list(act.batch_ids())[: logits.shape[0]]):
            if request_id not in flagged:
                continue
            eos = self.eos.get(row)
            if eos is None:
                continue
            logits[row] = float("-inf")
            logits[row, eos] = 0.0
        return logits
