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
    return layer_outputs(model, (layer,), input_ids)[layer][0]


@torch.no_grad()
def layer_outputs(
    model, layers: tuple[int, ...], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> dict[int, torch.Tensor]:
    """The outputs of several decoder layers for a batch ([B, T, d] each), forward stopped
    after the highest. With right padding and ``attention_mask`` the real tokens' rows are
    those of each sequence run alone (causal attention never looks right)."""
    captured: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook_for(layer: int):
        def hook(module, args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == last:
                raise _Stop

        return hook

    handles = [model.model.layers[layer].register_forward_hook(hook_for(layer)) for layer in set(layers)]
    try:
        model(input_ids, attention_mask=attention_mask)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured
