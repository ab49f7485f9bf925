"""Residual-stream activations of the target model with HF transformers, for SAE work.

The SAE tools read the output of one decoder layer (resid_post, HF ``hidden_states[L+1]``)
with a forward hook; when nothing above that layer is needed the hook stops the forward
pass there, which halves the cost at a middle layer.
"""

from __future__ import annotations

from pathlib import Path

import torch


class _Stop(Exception):
    """Raised by the hook to skip the layers above the tapped one."""


def load_model(model_path: Path):
    """(model, tokenizer, special token ids) for a local checkpoint, float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    return model, tokenizer, torch.tensor(sorted(tokenizer.all_special_ids))


@torch.no_grad()
def layer_output(model, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
    """The output of decoder ``layer`` for one sequence ([T, d]); stops the forward there."""
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        captured["x"] = output[0]
        raise _Stop

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        model(input_ids)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured["x"]
