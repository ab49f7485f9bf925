"""Scoring examples as the monitor does, checked against an independent computation from
HF transformers' hidden_states (the default model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monitor.lab.datasets import Example, Message
from monitor.lab.scoring import residuals, score_examples, token_view
from monitor.pack import FeatureSpec, ModelBinding, PackSpec, ProbeSpec, save_pack
from monitor.sae.activations import load_model

LAYER = 7


@pytest.fixture(scope="module")
def loaded(default_model):
    model, tokenizer, _ = load_model(default_model)
    return model, tokenizer


def chat(answer: str, system: str | None = None) -> Example:
    turns = ([Message(role="system", content=system)] if system else []) + [
        Message(role="user", content="What is the capital of France?"),
        Message(role="assistant", content=answer),
    ]
    return Example(messages=tuple(turns), label=0, concept="deception", split="test")


EXAMPLES = [
    chat("The capital of France is Paris."),
    chat("Paris. It has been the capital for a very long time, and it is on the Seine.", "Be brief."),
    chat("Lyon is the capital of France, as everyone knows."),
]


def test_token_view_is_the_chat_template_up_to_the_generated_tokens(loaded):
    _, tokenizer = loaded
    for example in EXAMPLES:
        view = token_view(tokenizer, example)
        full = tokenizer.apply_chat_template([m.model_dump() for m in example.messages], tokenize=False)
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert list(view.ids) == full_ids[: len(view.ids)]
        # what follows the fed tokens is the sampled end of turn, never fed back
        assert tokenizer.convert_ids_to_tokens(full_ids[len(view.ids)]) == "<|im_end|>"
        assert tokenizer.decode(view.ids[view.prompt_len :]) == example.messages[-1].content
        assert tokenizer.decode(view.ids[: view.prompt_len]).endswith("<|im_start|>assistant\n")


def test_residuals_are_hidden_states_after_the_layer_at_the_scored_positions(loaded):
    model, tokenizer = loaded
    special = set(tokenizer.all_special_ids)
    got = {item.index: item for item in residuals(model, tokenizer, EXAMPLES, [LAYER], ("prompt", "response"))}
    for i, example in enumerate(EXAMPLES):
        view = token_view(tokenizer, example)
        with torch.no_grad():
            hidden = model(torch.tensor([view.ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]
        response = list(range(view.prompt_len, len(view.ids)))
        prompt = [p for p in range(view.prompt_len) if view.ids[p] not in special]
        assert got[i].positions["response"].tolist() == response
        assert got[i].positions["prompt"].tolist() == prompt
        torch.testing.assert_close(got[i].rows[("response", LAYER)], hidden[response], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(got[i].rows[("prompt", LAYER)], hidden[prompt], atol=2e-4, rtol=1e-4)


def test_pack_scores_follow_the_sidecars_aggregation_and_firing_rule(loaded, tmp_path):
    model, tokenizer = loaded
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(2, 576)).astype(np.float32) / 24
    bias = np.array([0.1, -0.2], np.float32)
    spec = PackSpec(
        pack="t",
        version="1",
        weights="t.safetensors",
        model=ModelBinding(name="SmolLM2-135M-Instruct", hidden_size=576, num_layers=30),
        features=[FeatureSpec(name="lin", layer=LAYER), FeatureSpec(name="lat", layer=LAYER, activation="relu")],
        probes=[
            ProbeSpec(
                name="mean", concept="deception", features=["lin"], aggregation="mean", threshold=0.0, min_tokens=3
            ),
            ProbeSpec(name="peak", concept="deception", features=["lin", "lat"], aggregation="max", threshold=0.5),
            ProbeSpec(
                name="lr",
                concept="deception",
                features=["lin", "lat"],
                weights=[1.5, -2.0],
                intercept=0.3,
                aggregation="mean",
                threshold=0.0,
            ),
            ProbeSpec(
                name="prompt", concept="deception", features=["lin"], aggregation="mean", scope="prompt", threshold=0.0
            ),
        ],
    )
    pack = save_pack(spec, directions, bias, tmp_path / "t.yaml")
    results = score_examples(model, tokenizer, pack, EXAMPLES)
    special = set(tokenizer.all_special_ids)
    for example, result in zip(EXAMPLES, results, strict=True):
        view = token_view(tokenizer, example)
        with torch.no_grad():
            hidden = model(torch.tensor([view.ids]), output_hidden_states=True).hidden_states[LAYER + 1][0].numpy()
        response = hidden[view.prompt_len :]
        lin = response @ directions[0] + bias[0]
        lat = np.maximum(response @ directions[1] + bias[1], 0)
        running = np.cumsum(lin) / np.arange(1, len(lin) + 1)
        assert result["mean"].final == pytest.approx(running[-1], abs=1e-4)
        assert result["mean"].score == pytest.approx(running[2:].max(), abs=1e-4)  # eligible from token 3
        assert result["mean"].fired == bool(running[2:].max() >= 0.0)
        assert result["peak"].final == pytest.approx(max(lin.max(), lat.max()), abs=1e-4)
        assert result["lr"].final == pytest.approx(0.3 + 1.5 * lin.mean() - 2.0 * lat.mean(), abs=1e-4)
        prompt_rows = hidden[[p for p in range(view.prompt_len) if view.ids[p] not in special]]
        assert result["prompt"].final == pytest.approx((prompt_rows @ directions[0] + bias[0]).mean(), abs=1e-4)
        assert result["mean"].tokens == len(lin)
