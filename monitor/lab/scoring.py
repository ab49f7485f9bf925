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
decode step (the prompt as one prefill chunk), folded and judged by the same probe rule the
sidecar runs (:mod:`monitor.probe`). An example's *score* for a probe is the score the rule judges:
the final score for ``decide: end``, the highest running score once ``min_tokens`` were in
scope for ``decide: running``; so "flagged" is exactly ``score >= threshold``, and a
threshold calibrated on these scores is the one the monitor applies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monitor.errors import ProbeDataError
from monitor.lab.datasets import Example
from monitor.pack import ProbePack
from monitor.probe import FIRED, SCOPE_LABELS, ProbeTracks, Step, probe_groups

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
    #: With ``trace``: the probe's score after each step (response: after each token), as the
    #: sidecar holds it mid-stream (-inf before any token of the probe's scope).
    running: tuple[float, ...] | None = None


class PackScorer:
    """A pack's features and probes, run through the monitor's projection and probe rule."""

    def __init__(self, pack: ProbePack, trace: bool = False) -> None:
        self.trace = trace
        if pack.directions is None:
            raise ProbeDataError(f"probe pack {pack.path}: loaded without weights; load it with its safetensors")
        self.pack = pack
        from monitor.kernels import LayerBanks

        self.banks = LayerBanks.stack(pack.feature_banks())
        self.groups = probe_groups(pack)
        self.layers = self.banks.layers
        self.scopes = tuple(sorted(SCOPE_LABELS[scope] for scope in self.groups))

    def steps(self, example: Residuals, scope: str) -> list[Step]:
        """The summaries the plugin would ship for ``scope``: the prompt as one prefill chunk,
        the response one decode step per token, projected as the plugin projects."""
        from monitor.kernels import project_layers

        positions = example.positions[scope]
        n = len(positions)
        if n == 0:
            return []
        starts = np.arange(n + 1) if scope == "response" else np.array([0, n])
        seg_starts = torch.from_numpy(starts.astype(np.int32))
        xs = torch.stack([example.rows[(scope, layer)] for layer in self.banks.layers])
        result = project_layers(xs, self.banks, seg_starts, torch.ones(n, dtype=torch.bool))
        maxima, sums, counts = result.max.numpy(), result.sum.numpy(), result.count.numpy()
        argmax = positions[result.argmax.numpy()]  # row -> absolute position
        return [
            Step(int(positions[starts[s]]), int(starts[s + 1] - starts[s]), maxima[s], argmax[s], sums[s], counts[s])
            for s in range(len(starts) - 1)
        ]

    def score(self, example: Residuals) -> dict[str, ProbeResult]:
        results = {}
        for scope, group in self.groups.items():
            tracks = ProbeTracks(group)
            fired = np.zeros(len(group), dtype=bool)
            trace: list[np.ndarray] = []
            for step in self.steps(example, SCOPE_LABELS[scope]):
                for transition in tracks.observe(step):
                    fired[transition.probe] |= transition.kind == FIRED
                if self.trace:
                    trace.append(tracks.scores())
            final = tracks.scores()
            judged = tracks.judged
            for transition in tracks.close():
                fired[transition.probe] |= transition.kind == FIRED
            steps = np.array(trace).reshape(len(trace), len(group)).T.tolist() if self.trace else None
            for index, probe in enumerate(group.probes):
                results[probe.name] = ProbeResult(
                    float(judged[index]),
                    bool(fired[index]),
                    float(final[index]),
                    tracks.tokens,
                    tuple(steps[index]) if steps is not None else None,
                )
        return {spec.name: results[spec.name] for spec in self.pack.spec.probes}


def score_examples(
    model, tokenizer, pack: ProbePack, examples: Sequence[Example], trace: bool = False
) -> list[dict[str, ProbeResult]]:
    """Every example scored by every probe of ``pack``, in input order (with ``trace``, each
    probe's score after every step too)."""
    scorer = PackScorer(pack, trace)
    results: list[dict[str, ProbeResult] | None] = [None] * len(examples)
    for item in residuals(model, tokenizer, examples, scorer.layers, scorer.scopes):
        results[item.index] = scorer.score(item)
    return results  # type: ignore[return-value]
