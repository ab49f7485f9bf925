"""The prefix-cache score table on its own: prefix hashes, slots, and reads that refuse
scores of another prefix or an older generation (counted by reason)."""

from __future__ import annotations

import numpy as np
import torch

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm.batch import Gap, RequestInfo, StepLayout
from monitor.vllm.prefix import PrefixHasher, ScoreTable


def test_prefix_hashes_are_the_recurrence_vectorised_and_continue_from_any_prefix():
    hasher = PrefixHasher(seed=1)
    tokens = np.random.default_rng(0).integers(0, 50_000, 700)
    whole = hasher.hashes(tokens)
    stepwise, previous = [], -1
    for token in tokens:
        previous = hasher.extend(previous, int(token))
        stepwise.append(previous)
    assert whole.tolist() == stepwise
    assert hasher.hashes(tokens[300:], int(whole[299])).tolist() == whole[300:].tolist()
    changed = tokens.copy()
    changed[10] += 1  # every later prefix differs, every earlier one is the same
    other = hasher.hashes(changed)
    assert (other[:10] == whole[:10]).all() and (other[10:] != whole[10:]).all()
    # secret bases: other hashes (a one-token prefix hashes to the token itself under any bases)
    assert (PrefixHasher(seed=2).hashes(tokens)[1:] != whole[1:]).all()


def layout(requests: dict[str, RequestInfo], lengths: dict[str, tuple[int, int]], blocks: np.ndarray) -> StepLayout:
    ids = list(lengths)
    qsl = np.cumsum([0] + [b - a for a, b in lengths.values()])
    positions = np.concatenate([np.arange(a, b) for a, b in lengths.values()])
    return StepLayout(ids, qsl, positions, requests, blocks)


def test_a_cached_prefix_is_served_only_with_its_own_scores():
    features, block = 3, 4
    table = ScoreTable(64, features, block, torch.device("cpu"), PrefixHasher(seed=3))
    prompt = list(range(100, 112))  # 12 tokens: three blocks
    first = RequestInfo(12, None, prompt, [])
    blocks = np.array([[5, 2, 9]])
    step = layout({"a-1": first}, {"a-1": (0, 12)}, blocks)
    scores = torch.arange(12 * features, dtype=torch.float32).reshape(12, features)
    slots = table.layout_slots(step, 12)
    assert slots[:5].tolist() == [20, 21, 22, 23, 8]
    table.write(slots, table.row_tags(step, 12), scores)

    # the same prompt in another request: its first 8 positions come from blocks 5 and 2
    same = RequestInfo(12, None, prompt, [])
    got = table.recover([Gap(0, "b-1", "b", same, np.arange(8), 12)], blocks)
    assert not got.unscored and [s.num_tokens for s in got.segments] == [8]
    torch.testing.assert_close(got.scores, scores[:8])
    assert got.positions.tolist() == list(range(8))

    # a prompt that differs at position 6 shares block 5 only; block 2's slots hold another prefix
    other = RequestInfo(12, None, [*prompt[:6], 7, *prompt[7:]], [])
    got = table.recover([Gap(0, "c-1", "c", other, np.arange(8), 12)], blocks)
    assert [s.num_tokens for s in got.segments] == [6]
    assert [(u.reason, u.count) for u in got.unscored] == [(pb.UNSCORED_REASON_NOT_SEEN, 2)]

    # after a reset (pack reload, failed step) nothing written before is served
    table.reset()
    got = table.recover([Gap(0, "d-1", "d", same, np.arange(8), 12)], blocks)
    assert not got.segments and [(u.reason, u.count) for u in got.unscored] == [(pb.UNSCORED_REASON_RESET, 8)]
    # another prefix's old scores are not "reset" ones: they were never this prefix's
    got = table.recover([Gap(0, "e-1", "e", other, np.arange(8), 12)], blocks)
    assert [(u.reason, u.count) for u in sorted(got.unscored, key=lambda u: u.reason)] == sorted(
        [(pb.UNSCORED_REASON_RESET, 6), (pb.UNSCORED_REASON_NOT_SEEN, 2)]
    )
