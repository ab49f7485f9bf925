"""``saemon sae browse``: a latent's top-activating contexts from the offline corpus.

For each requested latent, the tokens where it fires hardest, each shown with a few tokens
of context: the peak token as ``⟦token⟧`` and the other tokens of the window where the
latent is active as ``[token]``. This is the raw material of feature discovery (what does
latent 1234 respond to?) and of the forensic view (why did it fire here?): with ``--pack``
it browses every SAE latent of a probe pack and writes ``<pack>.contexts.json`` beside it,
which the sidecar's request pages show next to the latents that contributed most.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from monitor.errors import SaeError
from monitor.pack import ProbePack
from monitor.sae.activations import layer_output, load_model
from monitor.sae.corpus import token_sequences
from monitor.sae.quality import residual_layer
from monitor.sae.sae import SAE

BEFORE, AFTER = 12, 4


@dataclass(frozen=True)
class Context:
    value: float
    text: str  # the window, peak as ⟦…⟧, other active tokens as […]
    sequence: int
    position: int


@dataclass(frozen=True)
class LatentReport:
    latent: int
    tokens: int  # tokens scanned
    fired: int  # tokens where it was active
    max_value: float
    contexts: list[Context]

    @property
    def frequency(self) -> float:
        return self.fired / self.tokens if self.tokens else 0.0


@torch.no_grad()
def top_contexts(
    sae: SAE,
    model_path: Path,
    latents: list[int],
    tokens: int = 20_000,
    contexts: int = 8,
    split: str = "eval",
    layer: int | None = None,
) -> list[LatentReport]:
    bad = [latent for latent in latents if not 0 <= latent < sae.d_sae]
    if bad:
        raise SaeError(f"latent(s) {bad} out of range: {sae.source} has latents 0..{sae.d_sae - 1}")
    model, tokenizer, special = load_model(model_path)
    at = residual_layer(sae, layer)
    index = torch.tensor(latents)
    heaps: dict[int, list[tuple[float, int, int]]] = {latent: [] for latent in latents}
    fired = torch.zeros(len(latents), dtype=torch.long)
    sequences: list[list[int]] = []
    acts: list[torch.Tensor] = []  # per sequence, [T, len(latents)], 0 at special tokens
    seen = 0
    for ids in token_sequences(tokenizer, split, tokens, 256):
        input_ids = torch.tensor([ids])
        keep = ~torch.isin(input_ids[0], special)
        x = layer_output(model, at, input_ids)
        z = sae.encode(x)[:, index] * keep.unsqueeze(-1)
        number = len(sequences)
        sequences.append(ids)
        acts.append(z)
        fired += (z > 0).sum(0)
        seen += int(keep.sum())
        for column, latent in enumerate(latents):
            values, positions = z[:, column].topk(min(contexts, z.shape[0]))
            for value, position in zip(values.tolist(), positions.tolist(), strict=True):
                if value <= 0:
                    break
                entry = (value, number, position)
                if len(heaps[latent]) < contexts:
                    heapq.heappush(heaps[latent], entry)
                elif entry > heaps[latent][0]:
                    heapq.heapreplace(heaps[latent], entry)
        if seen >= tokens:
            break
    reports = []
    for column, latent in enumerate(latents):
        best = sorted(heaps[latent], reverse=True)
        shown = [Context(v, window_text(tokenizer, sequences[s], acts[s][:, column], p), s, p) for v, s, p in best]
        reports.append(LatentReport(latent, seen, int(fired[column]), best[0][0] if best else 0.0, shown))
    return reports


def window_text(tokenizer, ids: list[int], values, peak: int) -> str:
    """Tokens around ``peak``: the peak as ⟦…⟧, other tokens with values > 0 as […]."""
    parts = []
    for position in range(max(0, peak - BEFORE), min(len(ids), peak + AFTER + 1)):
        piece = tokenizer.decode([ids[position]], skip_special_tokens=False).replace("\n", "⏎")
        if position == peak:
            piece = f"⟦{piece}⟧"
        elif values[position] > 0:
            piece = f"[{piece}]"
        parts.append(piece)
    return "".join(parts)


def pack_latents(pack: ProbePack) -> dict[str, int]:
    """The pack's SAE-latent features: feature name -> latent index."""
    return {f.name: f.latent for f in pack.spec.features if f.source == "sae_latent" and f.latent is not None}


def write_pack_contexts(pack: ProbePack, reports: list[LatentReport], path: Path) -> Path:
    """``<pack>.contexts.json`` for the forensic pages: per SAE-latent feature of the pack,
    its top-activating contexts on the offline corpus (what the latent responds to)."""
    by_latent = {report.latent: report for report in reports}
    document = {}
    for name, latent in pack_latents(pack).items():
        report = by_latent[latent]
        document[name] = {
            "latent": latent,
            "tokens": report.tokens,
            "frequency": report.frequency,
            "max_value": report.max_value,
            "contexts": [{"text": c.text, "value": round(c.value, 4)} for c in report.contexts],
        }
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return path


def format_reports(reports: list[LatentReport]) -> str:
    lines = []
    for report in reports:
        lines.append(
            f"latent {report.latent}: fired on {report.fired} of {report.tokens} tokens "
            f"({report.frequency:.2%}), max {report.max_value:.3g}"
        )
        lines += [f"  {c.value:8.3f}  {c.text}" for c in report.contexts] or ["  (never fired on the sample)"]
    return "\n".join(lines)
