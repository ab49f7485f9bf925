"""A small deception probe for the default model, made in seconds on CPU: the pack the
plugin's tests and benchmarks load (a real pack of the real format, quick to make; ``saemon
demo`` uses the shipped, measured pack instead).

Difference of means (the simplest linear probe): for fact questions answered under an
honest system prompt with the true answer, and under a deceptive system prompt with a false
answer, take the residual stream after ``LAYER`` on the answer tokens (teacher forcing,
HF transformers), average per example, and use ``mean(deceptive) - mean(honest)`` as the
direction. The bias centres the midpoint of the two training means at 0; the threshold is
set from held-out examples (the lowest held-out deceptive score, unless an honest one is
higher: then the midpoint of the two groups' means). The pack is written in the format the
plugin and the sidecar load, with its held-out figures in ``quality``. It is a test probe:
the probe library builds and measures real packs. What it detects is mostly the deceptive
instruction's imprint on the residual stream (it fires on true answers given under the
deceptive prompt), which is why the demo no longer uses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from monitor import data
from monitor.data import conversation as chat
from monitor.pack import FeatureSpec, ModelBinding, PackSpec, ProbePack, ProbeSpec, QualitySpec, save_pack

log = logging.getLogger(__name__)

LAYER = 20
# The system prompts and facts are data (monitor/data/demo.yaml); the last third of the
# facts is held out for the threshold.
_DEMO = data.demo()
HONEST = _DEMO.honest
DECEPTIVE = _DEMO.deceptive
FACTS = _DEMO.facts


def _answer_means(model, tokenizer, examples: list[list[dict[str, str]]]) -> np.ndarray:
    """Mean residual after LAYER over each example's answer tokens, [N, d], as the monitor
    sees the answer (the probe library's scoring path)."""
    from monitor.lab.datasets import Example, Message
    from monitor.lab.pooling import pool

    rows = [
        Example(messages=tuple(Message(**m) for m in messages), label=0, concept="deception", split="train")
        for messages in examples
    ]
    return pool(model, tokenizer, rows, [LAYER]).layers[LAYER]


def build(model_path: Path, out_dir: Path, model_name: str = "SmolLM2-135M-Instruct") -> ProbePack:
    from sklearn.metrics import roc_auc_score

    from monitor.sae.activations import load_model

    model, tokenizer, _ = load_model(model_path)
    split = 2 * len(FACTS) // 3
    train, held = FACTS[:split], FACTS[split:]
    honest = _answer_means(model, tokenizer, [chat(HONEST, f.question, f.true_answer) for f in train])
    deceptive = _answer_means(model, tokenizer, [chat(DECEPTIVE, f.question, f.false_answer) for f in train])
    direction = deceptive.mean(0) - honest.mean(0)
    direction /= np.linalg.norm(direction)
    bias = -float((deceptive.mean(0) + honest.mean(0)) @ direction / 2)

    held_honest = (
        _answer_means(model, tokenizer, [chat(HONEST, f.question, f.true_answer) for f in held]) @ direction + bias
    )
    held_deceptive = (
        _answer_means(model, tokenizer, [chat(DECEPTIVE, f.question, f.false_answer) for f in held]) @ direction + bias
    )
    threshold = float(held_deceptive.min())
    if held_honest.max() >= threshold:
        threshold = float((held_honest.mean() + held_deceptive.mean()) / 2)
    recall = float((held_deceptive >= threshold).mean())
    fpr = float((held_honest >= threshold).mean())
    auroc = float(
        roc_auc_score(
            np.concatenate([np.zeros(len(held_honest)), np.ones(len(held_deceptive))]),
            np.concatenate([held_honest, held_deceptive]),
        )
    )
    hidden = model.config.hidden_size
    spec = PackSpec(
        pack="demo-deception",
        version="1",
        description="Demo deception probe (difference of means, layer 20); see monitor/lab/demo_pack.py.",
        model=ModelBinding(name=model_name, hidden_size=hidden, num_layers=model.config.num_hidden_layers),
        weights="demo-deception.safetensors",
        features=[FeatureSpec(name="deception_dir", layer=LAYER, activation="identity", threshold=threshold)],
        probes=[
            ProbeSpec(
                name="deception",
                concept="deception",
                features=["deception_dir"],
                aggregation="mean",
                scope="response",
                threshold=threshold,
                min_tokens=3,
                # a mean over a short answer moves a lot per token: resolve only well below
                hysteresis=abs(threshold) / 2,
                severity="critical",
                action="alert",
                quality=QualitySpec(
                    auroc=auroc,
                    recall_at_threshold=recall,
                    fpr_at_threshold=fpr,
                    dataset="demo_pack.FACTS held-out third (teacher-forced)",
                    examples=2 * len(held),
                ),
            )
        ],
    )
    pack = save_pack(
        spec, direction[None, :].astype(np.float32), np.array([bias], np.float32), out_dir / "demo-deception.yaml"
    )
    log.info("demo pack: held-out AUROC %.2f, recall %.2f, FPR %.2f at threshold %.3f", auroc, recall, fpr, threshold)
    return pack
