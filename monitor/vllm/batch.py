"""Which tapped row belongs to which request, and which rows to score.

After each step the adapter reads the runner's batch layout: the scheduled requests in
row order, ``query_start_loc`` (request i owns rows ``qsl[i]:qsl[i+1]``; rows past
``qsl[-1]`` are padding) and each row's absolute position in its request's sequence. The
planner turns that into segments for the projection:

- **Dedup by absolute position.** Chunked prefill spreads a prompt over steps, preemption
  recomputes rows from the start, and a step can run after EOS: a row is scored only if
  its position is past everything already scored for that request.
- **Scope.** A row at position < prompt length is a prompt token; later rows are generated
  tokens fed back as input (a decode row is the input token of its step).
- **Special tokens** (BOS, chat-template markers) are masked out when configured: they have
  huge norms and light up latents without meaning anything.

Each request's rows become up to two contiguous segments (prompt part, response part);
masked rows stay inside their segment with ``row_mask`` False, so segments tile the rows.

- **Gaps.** With prefix caching on, a request's first rows start past positions it never
  computed here (vLLM had their KV cached). The planner reports them as a :class:`Gap`
  (its special tokens already left out) and counts them as done; the score table
  (:mod:`monitor.vllm.prefix`) serves their scores.
- **Sampled prompts.** With ``plugin.prompt_token_scores`` above 0 a share of requests
  (:func:`samples_prompt`, decided once per request) also has its scored prompt rows listed
  (``StepPlan.token_rows``), so their per-token feature values can be shipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from monitor.proto.saemon.v1 import monitor_pb2 as pb

_PROMPT, _RESPONSE = pb.TOKEN_SCOPE_PROMPT, pb.TOKEN_SCOPE_RESPONSE


def external_id(worker_request_id: str) -> str:
    """vLLM's worker sees "{external id}-{8 random chars}"; clients know the external id."""
    head, sep, _ = worker_request_id.rpartition("-")
    return head if sep else worker_request_id


def samples_prompt(request_id: str, share: float) -> bool:
    """Whether the external request ``request_id`` is one whose prompt tokens' feature values
    are sent (``plugin.prompt_token_scores``): the first 8 bytes of the id's BLAKE2b digest
    (UTF-8, default 64-byte digest) as a big-endian integer over 2**64, below ``share``. The
    same on every step, rank and process, and for whoever wants to know it from the id."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class RequestView(Protocol):
    """What the planner reads of a request (the adapter gives a live view of the runner's state)."""

    @property
    def prompt_len(self) -> int: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def prompt_token_ids(self) -> Sequence[int]: ...
    @property
    def output_token_ids(self) -> Sequence[int]: ...
    @property
    def policy(self) -> str: ...


@dataclass(frozen=True)
class RequestInfo:
    """A request's facts as plain values (tests, and any layout reader without live state)."""

    prompt_len: int
    max_tokens: int | None
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]
    policy: str = ""


@dataclass(frozen=True)
class StepLayout:
    """The rows of one step, read from the model runner."""

    req_ids: Sequence[str]  # worker request ids, in row order
    query_start_loc: np.ndarray  # int, [R + 1]
    positions: np.ndarray  # int, [T] absolute position of each row (T >= qsl[-1])
    requests: Mapping[str, RequestView]  # by worker request id
    #: [R, max blocks] the KV block ids of each request row (the runner's block table),
    #: where the score table needs them (prefix caching on)
    block_table: np.ndarray | None = None


class Segment(NamedTuple):  # a tuple: built once per request per step, on the engine thread
    request_id: str  # external id
    scope: int  # pb.TOKEN_SCOPE_*
    first_position: int  # position of the first scored row
    num_tokens: int  # scored (unmasked) rows


class Gap(NamedTuple):
    """Positions a request skipped because vLLM had their KV cached."""

    row: int  # the request's row in the batch (its block-table row)
    worker_id: str
    external: str
    info: RequestView
    positions: np.ndarray  # int64, ascending: the skipped positions that would be scored
    prompt_len: int
    sampled: bool = False  # the request's prompt token scores are sent (samples_prompt)


class PromptRows(NamedTuple):
    """A sampled request's scored prompt rows in one step."""

    request_id: str  # external id
    rows: np.ndarray  # int64, ascending row indices into the step (row_mask True, prompt scope)


@dataclass(frozen=True)
class StepPlan:
    seg_starts: np.ndarray  # int32 [S + 1], segments tile rows seg_starts[0]:seg_starts[-1]
    row_mask: np.ndarray  # bool [T]: rows to score
    segments: list[Segment]  # [S]; num_tokens == 0 for fully masked segments
    positions: np.ndarray  # int64 [T], to map a row index back to a position
    gaps: list[Gap]  # skipped (prefix-cached) positions, when the planner looks for them
    #: the scored prompt rows of sampled requests (empty unless prompt_token_scores > 0)
    token_rows: list[PromptRows] = field(default_factory=list)
    #: (external id, policy) of requests whose policy was read this step (once per request)
    policies: list[tuple[str, str]] = field(default_factory=list)


class _Track:
    __slots__ = ("external", "info", "next_position", "policy", "prompt_len", "sampled")

    def __init__(self, external: str, sampled: bool) -> None:
        self.external = external
        self.policy: str | None = None  # read from the request once, with its first view
        self.next_position = 0  # every position below this one was scored (or skipped) once
        self.info: RequestView | None = None
        self.prompt_len = 0
        self.sampled = sampled  # its prompt rows are listed in StepPlan.token_rows


class Planner:
    """Per-worker attribution state; one instance for the worker's lifetime."""

    def __init__(
        self, special_token_ids: Iterable[int] = (), *, gaps: bool = False, prompt_token_scores: float = 0.0
    ) -> None:
        #: report prefix-cached positions as gaps (prefix caching on); otherwise a request
        #: cannot skip positions and none are looked for
        self.find_gaps = gaps
        #: the share of requests whose scored prompt rows are listed (samples_prompt)
        self.prompt_token_scores = prompt_token_scores
        self.special_set = frozenset(int(t) for t in special_token_ids)
        self.special = np.array(sorted(self.special_set), dtype=np.int64)
        self.tracks: dict[str, _Track] = {}

    def plan(self, layout: StepLayout) -> StepPlan:
        qsl = np.asarray(layout.query_start_loc, dtype=np.int64)
        total = int(qsl[-1]) if len(qsl) else 0
        # a copy: the layout may be a view of the runner's buffer, which the next step rewrites
        # before the client thread maps argmax rows to positions
        positions = np.array(layout.positions[:total], dtype=np.int64)
        row_mask = np.zeros(total, dtype=bool)
        starts: list[int] = [int(qsl[0])] if len(qsl) else [0]
        segments: list[Segment] = []
        gaps: list[Gap] = []
        token_rows: list[PromptRows] = []
        policies: list[tuple[str, str]] = []
        share = self.prompt_token_scores
        # Plain Python lists: a decode step is one row per request, and per-element numpy
        # indexing costs more than the work.
        bounds, at = qsl.tolist(), positions.tolist()
        requests, tracks, special = layout.requests, self.tracks, self.special_set
        for i, worker_id in enumerate(layout.req_ids):
            a, b = bounds[i], bounds[i + 1]
            if b <= a:
                continue
            track = tracks.get(worker_id)
            if track is None:
                external = external_id(worker_id)
                # hashed once, when the request is first seen; never on its decode steps
                track = tracks[worker_id] = _Track(external, share > 0 and samples_prompt(external, share))
            info = requests.get(worker_id) or track.info
            if info is not track.info:
                track.info = info
                track.prompt_len = info.prompt_len if info is not None else 0
                if track.policy is None and info is not None:
                    track.policy = info.policy
                    if track.policy:
                        policies.append((track.external, track.policy))
            prompt_len = track.prompt_len
            if self.find_gaps and at[a] > track.next_position and info is not None:
                gaps.append(self._gap(i, worker_id, track, info, at[a]))
                track.next_position = at[a]
            if b - a == 1:  # a decode step
                position = at[a]
                fresh = position >= track.next_position
                if fresh and special and info is not None:
                    if position < prompt_len:
                        token = info.prompt_token_ids[position]
                    else:
                        outputs = info.output_token_ids
                        token = outputs[position - prompt_len] if position - prompt_len < len(outputs) else -1
                    fresh = token not in special
                if fresh:
                    row_mask[a] = True
                    if track.sampled and position < prompt_len:
                        token_rows.append(PromptRows(track.external, np.array([a], np.int64)))
                segments.append(
                    Segment(track.external, _PROMPT if position < prompt_len else _RESPONSE, position, int(fresh))
                )
                starts.append(b)
                if position + 1 > track.next_position:
                    track.next_position = position + 1
                continue
            rows = positions[a:b]
            fresh_rows = rows >= track.next_position
            if self.special.size and info is not None:
                fresh_rows &= ~np.isin(self._token_ids(info, rows), self.special)
            row_mask[a:b] = fresh_rows
            split = a + int(np.searchsorted(rows, prompt_len, side="left"))
            if track.sampled and split > a:
                chosen = np.flatnonzero(fresh_rows[: split - a]) + a
                if chosen.size:
                    token_rows.append(PromptRows(track.external, chosen))
            for lo, hi, scope in ((a, split, _PROMPT), (split, b, _RESPONSE)):
                if hi <= lo:
                    continue
                scored = row_mask[lo:hi]
                count = int(scored.sum())
                first = at[lo + int(np.argmax(scored))] if count else at[lo]
                segments.append(Segment(track.external, scope, first, count))
                starts.append(hi)
            track.next_position = max(track.next_position, int(rows.max()) + 1)
        # Segments tile [qsl[0], total); a request with no rows adds no segment.
        seg_starts = np.array(starts if segments else [0], dtype=np.int32)
        return StepPlan(seg_starts, row_mask, segments, positions, gaps, token_rows, policies)

    def _gap(self, row: int, worker_id: str, track: _Track, info: RequestView, first: int) -> Gap:
        skipped = np.arange(track.next_position, first, dtype=np.int64)
        if self.special.size:
            skipped = skipped[~np.isin(self._token_ids(info, skipped), self.special)]
        return Gap(row, worker_id, track.external, info, skipped, track.prompt_len, track.sampled)

    @staticmethod
    def _token_ids(info: RequestView, rows: np.ndarray) -> np.ndarray:
        """The token id at each absolute position (-1 where the runner has not recorded it)."""
        ids = np.full(rows.shape, -1, dtype=np.int64)
        prompt = rows < info.prompt_len
        if prompt.any():
            ids[prompt] = np.asarray(info.prompt_token_ids, dtype=np.int64)[rows[prompt]]
        outputs = np.asarray(info.output_token_ids, dtype=np.int64)
        later = ~prompt & (rows - info.prompt_len < len(outputs))
        if later.any():
            ids[later] = outputs[rows[later] - info.prompt_len]
        return ids

    def finish(self, worker_ids: Iterable[str], *, token_ids: bool = False) -> list[pb.RequestEnd]:
        """End markers for finished requests (with their token ids when asked); forgets them."""
        ends = []
        for worker_id in worker_ids:
            track = self.tracks.pop(worker_id, None)
            if track is None:
                continue  # finished before any row was scheduled here
            info = track.info
            generated = len(info.output_token_ids) if info is not None else 0
            # The worker does not see why a request ended; reaching max_tokens is the one
            # reason it can tell apart from stop strings, EOS and aborts.
            reason = pb.FINISH_REASON_UNSPECIFIED
            if info is not None and info.max_tokens is not None and generated >= info.max_tokens:
                reason = pb.FINISH_REASON_LENGTH
            ends.append(
                pb.RequestEnd(
                    request_id=track.external,
                    finish_reason=reason,
                    prompt_tokens=info.prompt_len if info is not None else 0,
                    response_tokens=generated,
                    token_ids=[*info.prompt_token_ids, *info.output_token_ids] if token_ids and info else (),
                )
            )
        return ends
