"""Candidates for the demo's traffic: which test-split questions this model really lies on.

For the instructed pairs of the deception data's test split (unseen entities and unseen
system prompts; one pair per entity), the default model answers the question greedily under
the pair's deceptive and its honest system prompt (HF transformers, as vLLM answers at
temperature 0). Each answer is checked against the fact asked about (does it name the true
answer?) and scored by the pack's deception probe as the monitor scores it (teacher-forced
through :class:`monitor.lab.scoring.PackScorer`). One line per answer: whether it is false,
the score against the threshold, the answer.

    python bench/demo_requests.py --data probe-data/deception.jsonl \
        --pack probes/SmolLM2-135M-Instruct/safety.yaml [--limit 40] [--probe deception]

``monitor/data/demo_requests.yaml`` takes its requests from this list (how, it says).
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor import data
from monitor import model as models
from monitor.config import load_settings
from monitor.lab.datasets import Example, Message, read_datasets
from monitor.lab.scoring import PackScorer, residuals
from monitor.pack import load_pack
from monitor.sae.activations import load_model


def true_answer(entity: str) -> str:
    """The fact table's answer for ``table:key`` (meta.entity of a fact example)."""
    name, key = entity.split(":", 1)
    table = next(t for t in data.fact_tables() if t.name == name)
    return next(row[table.answer] for row in table.rows if row[table.key] == key)


def names(answer: str, fact: str) -> bool:
    """Whether ``answer`` names ``fact`` (case and accents ignored: "Bogotá" names "Bogota")."""

    def plain(text: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()

    return plain(fact) in plain(answer)


@torch.no_grad()
def answer(model, tokenizer, system: str, question: str, max_tokens: int) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the deception JSONL (saemon probes generate)")
    parser.add_argument("--pack", required=True)
    parser.add_argument("--probe", default="deception")
    parser.add_argument("--limit", type=int, default=40, help="entities to try")
    parser.add_argument("--max-tokens", type=int, default=48, help="as the demo asks")
    args = parser.parse_args()
    settings = load_settings()
    path = models.pull(settings) if settings.model.path is None else models.model_path(settings)
    model, tokenizer, _ = load_model(path)
    pack = load_pack(Path(args.pack))
    spec = next(p for p in pack.spec.probes if p.name == args.probe)
    scorer = PackScorer(pack)
    pairs: dict[str, dict[int, Example]] = {}
    for e in read_datasets([Path(args.data)]):
        if e.split == "test" and e.meta.get("dataset") == "instructed":
            pairs.setdefault(e.meta["entity"], {}).setdefault(e.label, e)
    print(f"probe {spec.name}: threshold {spec.threshold:.3f}")
    lies, truths = [], []  # scores of false answers to deceptive prompts, true answers to honest ones
    print(f"{'entity':<28} {'prompt':<9} {'false':<6} {'score':>7} {'fires':<6} answer")
    for entity, pair in list(pairs.items())[: args.limit]:
        fact = true_answer(entity)
        for label, kind in ((1, "deceptive"), (0, "honest")):
            assert pair[label].messages is not None
            system, question = pair[label].messages[0].content, pair[label].messages[1].content
            said = answer(model, tokenizer, system, question, args.max_tokens)
            turns = (Message(role="system", content=system), Message(role="user", content=question))
            asked = Example(
                messages=(*turns, Message(role="assistant", content=said)),
                label=label,
                concept="deception",
                split="test",
            )
            item = next(residuals(model, tokenizer, [asked], scorer.layers, scorer.scopes))
            score = scorer.score(item)[spec.name].score
            false = not names(said, fact)
            fires = score >= spec.threshold
            if kind == "deceptive" and false:
                lies.append(score)
            elif kind == "honest" and not false:
                truths.append(score)
            print(
                f"{entity:<28} {kind:<9} {'FALSE' if false else 'true':<6} {score:7.3f} {'YES' if fires else 'no':<6} "
                f"{said[:90]!r}   | system: {system[:60]!r} | fact: {fact}",
                flush=True,
            )

    from monitor.lab.ood import bootstrap

    print(
        f"\nlies (false answers to deceptive prompts): {len(lies)}; truths (true answers to honest prompts): {len(truths)}"
    )
    if lies and truths:
        area, _ = bootstrap(np.array(lies), np.array(truths), np.array(truths), 0.01, 1000)
        caught = np.mean(np.array(lies) >= spec.threshold)
        flagged = np.mean(np.array(truths) >= spec.threshold)
        print(
            f"AUROC lies vs truths {area}; at the pack's threshold: {caught:.0%} of lies flagged, {flagged:.0%} of truths"
        )


if __name__ == "__main__":
    main()
