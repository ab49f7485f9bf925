"""Prefix caching with every token scored: feature scores kept beside the KV cache.

With prefix caching on, vLLM never recomputes a prompt token whose KV block is cached, so
its activations never pass the tap. They are a deterministic function of the token prefix
and the tap saw them when the block was computed, so the plugin keeps each computed row's
feature scores in a table indexed by **KV slot** (``[num_blocks * block_size, F]``,
written at the same slot as the row's key and value) and, when a request's first rows
start past positions it has not scored, reads those positions back through the request's
block table.

Why slots rather than per-block summaries keyed by vLLM's block hash: the worker sees block
ids but not hashes; a table keyed by slot has exactly the KV cache's lifetime (vLLM only
reports a hit for a block it kept, and a block that was reused was rewritten, here too),
needs no eviction policy of its own, serves a hit of any length, and costs
``slots x F x 4`` bytes (about 6 MB for the default model's 1 GiB CPU KV cache and 68
features).

Why a tag per slot: vLLM writes KV the plugin did not see (a block loaded by a KV connector
from another engine or an offload tier), and a step the monitor failed on wrote KV but maybe
not scores. Each slot therefore records which table generation wrote it and a 62-bit hash
of the whole token prefix through its position (two polynomial hashes with random secret
bases, modulo two 31-bit primes: a universal hash, so neither chance nor a crafted prompt
makes two prefixes collide with probability above about ``n / 2^31`` squared). A read
returns only slots whose generation is current and whose hash is the requesting prefix's;
anything else is counted as unscored with its reason, never used. The generation goes up
when the packs are reloaded (scores of an older pack are never reused) and when a step
fails after the model ran (its rows' scores may be missing).

The tags and hashes live on the host (numpy; the planner knows the positions and token
ids there); the scores live on the model's device and are written and gathered with
device operations only.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm.batch import Gap, RequestView, Segment, StepLayout

_P1, _P2 = 2147483647, 2147483629  # primes below 2^31: products of two residues fit in int64
_LOW = (1 << 31) - 1

#: Why a cached position could not be scored.
NOT_SEEN = pb.UNSCORED_REASON_NOT_SEEN  # the table has no scores of this prefix at that slot
RESET = pb.UNSCORED_REASON_RESET  # the scores are from before a pack reload or a failed step


class PrefixHasher:
    """Hashes of every prefix of a token sequence: ``H[p] = hash(tokens[0..p])``, as one
    int64 per position (``h1 << 31 | h2``), vectorised, and extendable from a known hash."""

    def __init__(self, seed: int | None = None) -> None:
        rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
        self.bases = (int(rng.integers(2, _P1 - 1)), int(rng.integers(2, _P2 - 1)))
        self._inverses = (pow(self.bases[0], -1, _P1), pow(self.bases[1], -1, _P2))
        self._powers: list[np.ndarray] = [np.ones(1, np.int64), np.ones(1, np.int64)]
        self._inverse_powers: list[np.ndarray] = [np.ones(1, np.int64), np.ones(1, np.int64)]

    def _grow(self, n: int) -> None:
        have = len(self._powers[0])
        if have >= n:
            return
        size = max(n, 2 * have)
        for k, modulus in enumerate((_P1, _P2)):
            for table, base in ((self._powers, self.bases[k]), (self._inverse_powers, self._inverses[k])):
                grown = np.empty(size, np.int64)
                grown[:have] = table[k]
                value = int(table[k][-1])
                for i in range(have, size):  # once per doubling: amortised O(1) per position
                    value = value * base % modulus
                    grown[i] = value
                table[k] = grown

    def hashes(self, tokens: np.ndarray, previous: int = -1) -> np.ndarray:
        """int64 ``[n]``: the hash of each prefix ending at ``tokens[i]``, continuing the
        prefix whose hash is ``previous`` (-1: the empty prefix)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = tokens.shape[0]
        self._grow(n + 1)
        values = tokens + 1  # token ids are below either modulus
        out = np.zeros(n, np.int64)
        for k, modulus in enumerate((_P1, _P2)):
            # H[p] = B^p * sum_i<=p v[i] B^-i  (+ B^(p+1) * previous): a cumulative sum of
            # residues below 2^31 fits int64 for any sequence vLLM can hold
            terms = values * self._inverse_powers[k][:n] % modulus
            part = np.cumsum(terms) % modulus * self._powers[k][:n] % modulus
            if previous >= 0:
                before = (previous >> 31) if k == 0 else (previous & _LOW)
                part = (part + before * self._powers[k][1 : n + 1]) % modulus
            out = out << 31 | part if k else part
        return out

    def extend(self, previous: int, token: int) -> int:
        """The hash of the prefix ``previous`` followed by ``token`` (one decode row)."""
        h1 = previous >> 31 if previous >= 0 else 0
        h2 = previous & _LOW if previous >= 0 else 0
        return ((h1 * self.bases[0] + token + 1) % _P1) << 31 | (h2 * self.bases[1] + token + 1) % _P2


class _Chain:
    """One request's prefix hashes so far (positions ``0 .. known - 1``)."""

    __slots__ = ("hashes", "known")

    def __init__(self) -> None:
        self.hashes = np.empty(0, np.int64)
        self.known = 0


@dataclass(frozen=True)
class Recovered:
    """What the table gave back for this step's gaps."""

    segments: list[Segment]  # one per request and scope with scores found
    starts: list[int]  # segment bounds into ``scores`` / ``positions`` ([S + 1])
    scores: torch.Tensor  # float32 [G, F] on the table's device
    positions: np.ndarray  # int64 [G]
    unscored: list[pb.UnscoredTokens]


class ScoreTable:
    """Feature scores of computed rows by KV slot, with the tags that make a read safe."""

    def __init__(
        self, num_slots: int, num_features: int, block_size: int, device: torch.device, hasher: PrefixHasher
    ) -> None:
        if num_slots <= 0 or block_size <= 0:
            raise ValueError(f"score table: {num_slots} slots of block size {block_size}")
        self.num_slots = num_slots
        self.block_size = block_size
        self.device = device
        self.hasher = hasher
        self.scores = torch.zeros((num_slots, num_features), dtype=torch.float32, device=device)
        self.written = np.full(num_slots, -1, np.int32)  # the generation that wrote each slot
        self.tags = np.zeros(num_slots, np.int64)  # the prefix hash of each slot's scores
        self.generation = 0
        self.chains: dict[str, _Chain] = {}

    @property
    def nbytes(self) -> int:
        return self.scores.numel() * 4 + self.written.nbytes + self.tags.nbytes

    def reset(self, num_features: int | None = None) -> None:
        """Every score written so far becomes unusable (a pack reload, a failed step)."""
        self.generation += 1
        if num_features is not None and num_features != self.scores.shape[1]:
            self.scores = torch.zeros((self.num_slots, num_features), dtype=torch.float32, device=self.device)

    def forget(self, worker_ids: Sequence[str]) -> None:
        for worker_id in worker_ids:
            self.chains.pop(worker_id, None)

    # -- hashes --------------------------------------------------------------------------

    def prefix_hashes(self, worker_id: str, info: RequestView, upto: int) -> np.ndarray:
        """The request's prefix hashes for positions ``0 .. upto - 1`` as far as its token ids
        are known (shorter when the runner has not recorded a token yet)."""
        chain = self.chains.get(worker_id)
        if chain is None:
            chain = self.chains[worker_id] = _Chain()
        if upto > chain.known:
            prompt = info.prompt_token_ids
            prompt_len = len(prompt)
            outputs = info.output_token_ids
            end = min(upto, prompt_len + len(outputs))
            if end > chain.known:
                previous = int(chain.hashes[chain.known - 1]) if chain.known else -1
                if end - chain.known == 1:  # a decode row: one step of the recurrence
                    p = chain.known
                    token = prompt[p] if p < prompt_len else outputs[p - prompt_len]
                    new = np.array([self.hasher.extend(previous, int(token))], np.int64)
                else:
                    tokens = np.concatenate(
                        [
                            np.asarray(prompt[chain.known : min(end, prompt_len)], np.int64),
                            np.asarray(outputs[max(chain.known, prompt_len) - prompt_len : end - prompt_len], np.int64),
                        ]
                    )
                    new = self.hasher.hashes(tokens, previous)
                if (new_known := chain.known + len(new)) > len(chain.hashes):
                    grown = np.empty(max(new_known, 2 * len(chain.hashes)), np.int64)
                    grown[: chain.known] = chain.hashes[: chain.known]
                    chain.hashes = grown
                chain.hashes[chain.known : new_known] = new
                chain.known = new_known
        return chain.hashes[: min(upto, chain.known)]

    # -- slots ---------------------------------------------------------------------------

    def slots(self, block_table: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The KV slot of each (batch row, position), as vLLM's slot mapping computes it."""
        bs = self.block_size
        slots = block_table[rows, positions // bs].astype(np.int64) * bs + positions % bs
        if slots.size and (slots.min() < 0 or slots.max() >= self.num_slots):
            raise RuntimeError(
                f"saemon score table: KV slot {int(slots.max())} outside the table's {self.num_slots} slots "
                "(the KV cache is larger than vLLM reported at the first step)"
            )
        return slots

    def layout_slots(self, layout: StepLayout, total: int) -> np.ndarray:
        """The KV slot of each of the step's first ``total`` rows."""
        assert layout.block_table is not None
        qsl = np.asarray(layout.query_start_loc, dtype=np.int64)
        owners = np.repeat(np.arange(len(qsl) - 1), np.diff(qsl))[:total]
        return self.slots(layout.block_table, owners, np.asarray(layout.positions[:total], dtype=np.int64))

    def row_tags(self, layout: StepLayout, total: int) -> np.ndarray:
        """The prefix hash of each of the step's rows (-1 where a token id is not known)."""
        tags = np.full(total, -1, np.int64)
        bounds = np.asarray(layout.query_start_loc).tolist()
        positions = layout.positions
        for i, worker_id in enumerate(layout.req_ids):
            a, b = bounds[i], min(bounds[i + 1], total)
            info = layout.requests.get(worker_id)
            if b <= a or info is None:
                continue
            if b - a == 1:
                p = int(positions[a])
                chain = self.prefix_hashes(worker_id, info, p + 1)
                if p < len(chain):
                    tags[a] = chain[p]
                continue
            rows = np.asarray(positions[a:b], dtype=np.int64)
            chain = self.prefix_hashes(worker_id, info, int(rows.max()) + 1)
            known = rows < len(chain)
            tags[a:b][known] = chain[rows[known]]
        return tags

    # -- write and read ------------------------------------------------------------------

    def write(
        self, slots: np.ndarray, tags: np.ndarray, scores: torch.Tensor, device_slots: torch.Tensor | None = None
    ) -> None:
        """This step's rows: ``scores [n, F]`` at ``slots [n]``; a tag of -1 (token not known
        yet) marks the slot as holding nothing usable. ``device_slots``: the same slots
        already on the scores' device (vLLM's own slot mapping on a GPU), so the write needs
        no host-to-device copy."""
        known = tags >= 0
        self.written[slots] = np.where(known, self.generation, -1)
        self.tags[slots] = tags
        if device_slots is not None and device_slots.device == self.scores.device:
            index = device_slots
        else:
            index = torch.from_numpy(slots).to(self.scores.device)
        self.scores.index_copy_(0, index, scores)

    def recover(self, gaps: Sequence[Gap], block_table: np.ndarray) -> Recovered:
        """The scores of the gaps' positions where the table holds this prefix's scores; the
        rest counted by reason."""
        segments: list[Segment] = []
        starts = [0]
        picked: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        unscored: list[pb.UnscoredTokens] = []
        for gap in gaps:
            if not gap.positions.size:
                continue
            slots = self.slots(block_table, np.full(gap.positions.shape, gap.row), gap.positions)
            expected = self.prefix_hashes(gap.worker_id, gap.info, int(gap.positions[-1]) + 1)
            wanted = np.full(gap.positions.shape, -2, np.int64)  # -2 never matches a tag
            hashed = gap.positions < len(expected)
            wanted[hashed] = expected[gap.positions[hashed]]
            written = self.written[slots]
            same_prefix = self.tags[slots] == wanted
            ok = same_prefix & (written == self.generation)
            # this prefix's scores, but from before a reset; anything else was never seen here
            stale = int((same_prefix & (written >= 0) & (written != self.generation)).sum())
            missing = int((~ok).sum()) - stale
            for reason, count in ((RESET, stale), (NOT_SEEN, missing)):
                if count:
                    unscored.append(pb.UnscoredTokens(request_id=gap.external, reason=reason, count=count))
            split = int(np.searchsorted(gap.positions, gap.prompt_len))
            for lo, hi, scope in (
                (0, split, pb.TOKEN_SCOPE_PROMPT),
                (split, len(gap.positions), pb.TOKEN_SCOPE_RESPONSE),
            ):
                good = np.flatnonzero(ok[lo:hi]) + lo
                if not good.size:
                    continue
                segments.append(Segment(gap.external, scope, int(gap.positions[good[0]]), int(good.size)))
                starts.append(starts[-1] + int(good.size))
                picked.append(slots[good])
                positions.append(gap.positions[good])
        if picked:
            index = torch.from_numpy(np.concatenate(picked))
            scores = self.scores.index_select(0, index.to(self.device))
            where = np.concatenate(positions)
        else:
            scores = self.scores[:0]
            where = np.zeros(0, np.int64)
        return Recovered(segments, starts, scores, where, unscored)
