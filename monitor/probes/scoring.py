"""Score examples through the target model exactly as the monitor scores live traffic.

What the monitor sees of a chat request (``monitor/vllm/batch.py``): the prompt is the chat
template up to the assistant's generation prompt, tokenized as vLLM tokenizes it; the
response is the generated tokens that are fed back, i.e. the assistant's content tokens
(the final end-of-turn token is sampled but never fed); special tokens are left out of
every score. This module rebuilds that token stream for a dataset example (teacher
forcing), runs the model with HF transformers, and takes the residual stream after each
requested layer (``hidden_states[layer + 1]``, what the tap reads).

:func:`monitor_scores` then goes through the monitor's own code: the pack's feature banks
and :func:`monitor.kernels.projection` (the path the plugin runs on CPU), one summary per
decode step (the prompt as one prefill chunk), folded by the sidecar's ``ProbeTrack`` and
judged by its firing rule. An example's *score* for a probe is the score the rule judges:
the final score for ``decide: end``, the highest running score once ``min_tokens`` were in
scope for ``decide: running``; so "flagged" is exactly ``score >= threshold``, and a
threshold calibrated on these scores is the one the monitor applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monitor.errors import ProbeDataError
from monitor.probes.datasets import Example
from monitor.probes.pack import ProbePack

SCOPES = ("prompt", "response")
#: Tokens per forward batch (padded); about 1000 tokens/s on 2 cores for SmolLM2.
BATCH_TOKENS = 4096


@dataclass(frozen=True)
class TokenView:
    """An example as the monitor sees it: token ids and where the response starts."""

    ids: tuple[int, ...]
    prompt_len: int

    def positions(self, scope: str, special: frozenset[int]) -> np.ndarray:
        """Absolute positions the monitor scores for ``scope`` (special tokens left out)."""
        lo, hi = (0, self.prompt_len) if scope == "prompt" else (self.prompt_len, len(self.ids))
        return np.array([p for p in range(lo, hi) if self.ids[p] not in special], dtype=np.int64)


def token_view(tokenizer, example: Example) -> TokenView:
    """Prompt ids (chat template with the generation prompt, no extra special tokens, as
    vLLM's chat endpoint renders it) followed by the assistant content's ids. A ``text``
    example is all response: a document scored over all its tokens."""
    if example.text is not None:
        return TokenView(tuple(tokenizer(example.text, add_special_tokens=False)["input_ids"]), 0)
    assert example.messages is not None
    history = [m.model_dump() for m in example.messages[:-1]]
    prompt = tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(example.messages[-1].content, add_special_tokens=False)["input_ids"]
    return TokenView(tuple(prompt_ids) + tuple(response_ids), len(prompt_ids))


@dataclass(frozen=True)
class Residuals:
    """One example's scored rows: per layer ``[n, d]`` float32, with absolute positions."""

    index: int
    positions: dict[str, np.ndarray]  # scope -> [n_scope]
    rows: dict[tuple[str, int], torch.Tensor]  # (scope, layer) -> [n_scope, d]


def residuals(
    model,
    tokenizer,
    examples: Sequence[Example],
    layers: Sequence[int],
    scopes: Sequence[str] = ("response",),
    batch_tokens: int = BATCH_TOKENS,
) -> Iterator[Residuals]:
    """The residual stream after each of ``layers`` at the positions the monitor scores,
    example by example (in length-sorted batches, so not in input order: see ``index``)."""
    num_layers = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise ProbeDataError(f"layers {bad} do not exist in this {num_layers}-layer model (0..{num_layers - 1})")
    from monitor.sae.activations import layer_outputs

    special = frozenset(tokenizer.all_special_ids)
    views = [token_view(tokenizer, e) for e in examples]
    wanted = tuple(sorted(set(layers)))
    order = sorted(range(len(views)), key=lambda i: len(views[i].ids))
    batch: list[int] = []

    def run(batch: list[int]) -> Iterator[Residuals]:
        width = max(len(views[i].ids) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(views[i].ids)] = torch.tensor(views[i].ids)
            mask[row, : len(views[i].ids)] = 1
        outputs = layer_outputs(model, wanted, ids, mask)
        for row, i in enumerate(batch):
            positions = {scope: views[i].positions(scope, special) for scope in scopes}
            rows = {
                (scope, layer): outputs[layer][row, torch.from_numpy(positions[scope])].float()
                for scope in scopes
                for layer in wanted
            }
            yield Residuals(i, positions, rows)

    for i in order:
        if batch and (len(batch) + 1) * len(views[i].ids) > batch_tokens:
            yield from run(batch)
            batch = []
        batch.append(i)
    if batch:
        yield from run(batch)


@dataclass(frozen=True)
class ProbeResult:
    """One probe on one example, as the monitor would have judged it."""

    score: float  # what the rule judges: final (decide end) or highest running score (-inf: never eligible)
    fired: bool  # the sidecar's rule fired at some step
    final: float  # the score at the end of the response
    tokens: int


class PackScorer:
    """A pack's features and probes, run through the monitor's projection and sidecar code."""

    def __init__(self, pack: ProbePack) -> None:
        from monitor.sidecar.state import CompiledProbe

        if pack.directions is None:
            raise ProbeDataError(f"probe pack {pack.path}: loaded without weights; load it with its safetensors")
        self.pack = pack
        self.banks = pack.feature_banks()
        self.probes = [CompiledProbe.from_pack(pack, spec) for spec in pack.spec.probes]
        self.layers = tuple(sorted({layer for layer, _, _ in self.banks}))
        self.scopes = tuple(sorted({p.spec.scope for p in self.probes}))

    def score(self, example: Residuals) -> dict[str, ProbeResult]:
        from monitor.kernels import projection
        from monitor.proto.saemon.v1 import monitor_pb2 as pb
        from monitor.sidecar.rules import decide, decide_at_end
        from monitor.sidecar.state import ProbeTrack

        num_features = len(self.pack.spec.features)
        summaries: dict[str, list[pb.RequestSummary]] = {}
        for scope in self.scopes:
            positions = example.positions[scope]
            n = len(positions)
            summaries[scope] = []
            if n == 0:
                continue
            # decode: one row per step; the prompt: one prefill chunk. Every segment is non-empty.
            starts = np.arange(n + 1) if scope == "response" else np.array([0, n])
            seg_starts = torch.from_numpy(starts.astype(np.int32))
            arrays = {key: np.zeros((len(starts) - 1, num_features), dtype) for key, dtype in
                      (("max", np.float32), ("argmax", np.int64), ("sum", np.float32), ("count", np.int64))}  # fmt: skip
            for layer, bank, columns in self.banks:
                result = projection(example.rows[(scope, layer)], bank, seg_starts, torch.ones(n, dtype=torch.bool))
                arrays["max"][:, columns] = result.max.numpy()
                arrays["sum"][:, columns] = result.sum.numpy()
                arrays["count"][:, columns] = result.count.numpy()
                arrays["argmax"][:, columns] = positions[result.argmax.numpy()]  # row -> absolute position
            code = pb.TOKEN_SCOPE_PROMPT if scope == "prompt" else pb.TOKEN_SCOPE_RESPONSE
            summaries[scope] = [
                pb.RequestSummary(
                    scope=code,
                    first_position=int(positions[starts[s]]),
                    num_tokens=int(starts[s + 1] - starts[s]),
                    max=arrays["max"][s].tolist(),
                    argmax_position=arrays["argmax"][s].tolist(),
                    sum=arrays["sum"][s].tolist(),
                    count_above=arrays["count"][s].tolist(),
                )
                for s in range(len(starts) - 1)
            ]
        results = {}
        for probe in self.probes:
            spec, track = probe.spec, ProbeTrack(probe)
            best, fired = -math.inf, False
            for summary in summaries[spec.scope]:
                track.update(summary)
                if spec.decide == "end":
                    continue
                if track.tokens >= spec.min_tokens:
                    best = max(best, track.score)
                decision = decide(track)
                if decision == pb.DECISION_KIND_FIRED:
                    track.firing = track.fired = fired = True
                elif decision == pb.DECISION_KIND_RESOLVED:
                    track.firing = False
            if spec.decide == "end":
                best = track.score if track.tokens >= spec.min_tokens else -math.inf
                fired = decide_at_end(track) is not None
            results[probe.name] = ProbeResult(best, fired, track.score, track.tokens)
        return results


def score_examples(model, tokenizer, pack: ProbePack, examples: Sequence[Example]) -> list[dict[str, ProbeResult]]:
    """Every example scored by every probe of ``pack``, in input order."""
    scorer = PackScorer(pack)
    results: list[dict[str, ProbeResult] | None] = [None] * len(examples)
    for item in residuals(model, tokenizer, examples, scorer.layers, scorer.scopes):
        results[item.index] = scorer.score(item)
    return results  # type: ignore[return-value]
