"""Per-token prompt scores for the forensic view (plugin.prompt_token_scores): which requests
are sampled, which of their rows are listed, what reaches the wire, and that large ones do
not push a message over the sidecar's size limit."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch

from monitor.config import load_settings
from monitor.errors import ConfigError
from monitor.kernels import FeatureBank, LayerBanks, Summaries, token_scores
from monitor.kernels.projection import projection_ref
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc
from monitor.vllm import batch as batch_module
from monitor.vllm.batch import Gap, Planner, RequestInfo, Segment, StepLayout, StepPlan, samples_prompt
from monitor.vllm.client import SidecarClient
from monitor.vllm.prefix import Recovered
from monitor.vllm.wire import StepResult, Stream, TokenRows, encode
from monitor.vllm.worker import sampled_prompt_rows, served_prompt_rows

PROMPT, RESPONSE = pb.TOKEN_SCOPE_PROMPT, pb.TOKEN_SCOPE_RESPONSE
#: two packs of one projection: "safety" owns column 0, "code" columns 1 and 2
SPLIT = (Stream("m", "safety", "1", 0, 1), Stream("m", "code", "2", 1, 2))


def info(prompt_len: int, outputs: int = 0, prompt=None) -> RequestInfo:
    prompt = prompt if prompt is not None else list(range(100, 100 + prompt_len))
    return RequestInfo(prompt_len, 16, prompt, list(range(500, 500 + outputs)))


def layout(rows: dict[str, list[int]], infos: dict[str, RequestInfo]) -> StepLayout:
    qsl = np.cumsum([0] + [len(p) for p in rows.values()])
    return StepLayout(list(rows), qsl, np.array([p for ps in rows.values() for p in ps]), infos)


def listed(plan) -> list[tuple[str, list[int]]]:
    """The plan's sampled prompt rows as (request, absolute positions)."""
    return [(p.request_id, plan.positions[p.rows].tolist()) for p in plan.token_rows]


def decode_token_scores(scores: pb.TokenScores, features: int) -> tuple[np.ndarray, np.ndarray]:
    """What the sidecar reads: int64 positions [n] and float32 values [n, F]."""
    positions = np.frombuffer(scores.positions, "<i8")
    return positions, np.frombuffer(scores.values, "<f4").reshape(len(positions), features)


# -- which requests -------------------------------------------------------------------------


def test_sampling_is_a_stable_hash_of_the_request_id_that_honours_the_share():
    ids = [f"chatcmpl-{i:05d}" for i in range(4000)]
    chosen = [samples_prompt(r, 0.25) for r in ids]
    assert abs(np.mean(chosen) - 0.25) <= 0.03
    assert chosen == [samples_prompt(r, 0.25) for r in ids]  # the same on every call
    # the definition, so anyone can tell from an id whether it was sampled
    fraction = [int.from_bytes(hashlib.blake2b(r.encode()).digest()[:8], "big") / 2**64 for r in ids]
    assert chosen == [f < 0.25 for f in fraction]
    # a larger share keeps every request a smaller one sampled
    assert all(samples_prompt(r, 0.5) for r, c in zip(ids, chosen, strict=True) if c)
    assert not any(samples_prompt(r, 0.0) for r in ids) and all(samples_prompt(r, 1.0) for r in ids)


def test_the_share_is_a_plugin_setting_between_0_and_1(clean_env):
    assert load_settings().plugin.prompt_token_scores == 0.0
    clean_env.setenv("SAEMON_PLUGIN__PROMPT_TOKEN_SCORES", "0.1")
    assert load_settings().plugin.prompt_token_scores == 0.1
    with pytest.raises(ConfigError, match="prompt_token_scores"):
        load_settings(overrides={"plugin.prompt_token_scores": 1.5})


# -- which rows ------------------------------------------------------------------------------


def test_a_sampled_request_lists_each_scored_prompt_row_once_without_special_tokens():
    bos, im_end = 1, 2
    prompt = [bos, 30, 31, im_end, 40, 41, 42]
    planner = Planner(special_token_ids={bos, im_end}, prompt_token_scores=1.0)
    a = {"A-xxxxxxxx": info(7, prompt=prompt)}
    p1 = planner.plan(layout({"A-xxxxxxxx": [0, 1, 2, 3]}, a))
    p2 = planner.plan(layout({"A-xxxxxxxx": [4, 5]}, a))
    # the last prompt row alone in a step, then the first generated token fed back
    p3 = planner.plan(layout({"A-xxxxxxxx": [6]}, a))
    p4 = planner.plan(layout({"A-xxxxxxxx": [7]}, {"A-xxxxxxxx": info(7, outputs=1, prompt=prompt)}))
    assert [listed(p) for p in (p1, p2, p3, p4)] == [[("A", [1, 2])], [("A", [4, 5])], [("A", [6])], []]
    # preempted and recomputed with the next token: nothing is listed twice, responses never
    recomputed = planner.plan(layout({"A-xxxxxxxx": list(range(9))}, {"A-xxxxxxxx": info(7, 2, prompt)}))
    assert listed(recomputed) == []


def test_a_chunk_across_the_prompt_boundary_lists_only_its_prompt_rows():
    planner = Planner(prompt_token_scores=1.0)
    plan = planner.plan(layout({"A-xxxxxxxx": [2, 3, 4, 5]}, {"A-xxxxxxxx": info(4, outputs=2)}))
    assert listed(plan) == [("A", [2, 3])]


def test_only_sampled_requests_are_listed_and_the_hash_runs_once_per_request(monkeypatch):
    calls = []

    def fake(request_id: str, share: float) -> bool:
        calls.append(request_id)
        return request_id == "A"

    monkeypatch.setattr(batch_module, "samples_prompt", fake)
    planner = Planner(prompt_token_scores=0.5)
    infos = {"A-aaaaaaaa": info(3), "B-bbbbbbbb": info(3)}
    plan = planner.plan(layout({"A-aaaaaaaa": [0, 1, 2], "B-bbbbbbbb": [0, 1, 2]}, infos))
    assert listed(plan) == [("A", [0, 1, 2])]
    for step in range(5):  # decode steps: no hashing
        outputs = {k: info(3, outputs=step + 1) for k in infos}
        assert listed(planner.plan(layout({"A-aaaaaaaa": [3 + step], "B-bbbbbbbb": [3 + step]}, outputs))) == []
    assert calls == ["A", "B"]


def test_with_a_share_of_0_nothing_is_listed_and_nothing_is_hashed(monkeypatch):
    monkeypatch.setattr(batch_module, "samples_prompt", lambda *_: pytest.fail("hashed with a share of 0"))
    planner = Planner()
    plan = planner.plan(
        layout({"A-aaaaaaaa": [0, 1, 2], "B-bbbbbbbb": [0]}, {"A-aaaaaaaa": info(3), "B-bbbbbbbb": info(2)})
    )
    assert plan.token_rows == [] and plan.row_mask.all()


# -- their values ---------------------------------------------------------------------------


def banks(d: int = 8) -> LayerBanks:
    """Two layers, three features (output columns 0 and 2 at layer 3, column 1 at layer 5)."""
    rng = np.random.default_rng(0)
    three = FeatureBank.from_numpy(rng.normal(size=(2, d)), [0.1, -0.2], ["identity", "relu"], [0.0, 0.0])
    five = FeatureBank.from_numpy(rng.normal(size=(1, d)), [0.0], ["jumprelu"], [0.3])
    return LayerBanks.stack([(3, three, np.array([0, 2])), (5, five, np.array([1]))])


def reference(xs: torch.Tensor, layer_banks: LayerBanks) -> np.ndarray:
    """Each row's feature values by the projection's reference (one segment per row)."""
    rows = xs.shape[1]
    out = np.zeros((rows, layer_banks.num_features), np.float32)
    every = torch.ones(rows, dtype=torch.bool)
    for i, (bank, columns) in enumerate(zip(layer_banks.banks, layer_banks.host_columns, strict=True)):
        per_row = projection_ref(xs[i], bank, torch.arange(rows + 1, dtype=torch.int32), every)
        out[:, columns] = per_row.max.numpy()
    return out


def test_sampled_rows_are_projected_alone_or_taken_from_the_steps_scores_with_the_same_values():
    layer_banks = banks()
    xs = torch.randn(2, 12, 8)
    planner = Planner(special_token_ids={7}, prompt_token_scores=1.0)
    infos = {"A-aaaaaaaa": info(5, prompt=[7, 1, 2, 3, 4]), "B-bbbbbbbb": info(3, outputs=3), "C-cccccccc": info(4)}
    plan = planner.plan(layout({"A-aaaaaaaa": [0, 1, 2, 3, 4], "B-bbbbbbbb": [5], "C-cccccccc": [0, 1, 2]}, infos))
    alone = sampled_prompt_rows(plan, xs, layer_banks, None)
    reused = sampled_prompt_rows(plan, xs, layer_banks, token_scores(xs, layer_banks, 9))
    assert alone.groups == reused.groups == [("A", PROMPT), ("C", PROMPT)]
    assert list(alone.starts) == [0, 4, 7] and alone.positions.tolist() == [1, 2, 3, 4, 0, 1, 2]
    rows = [1, 2, 3, 4, 6, 7, 8]  # A's rows but its special token, then C's; B's decode row is a response
    want = reference(xs, layer_banks)[rows]
    np.testing.assert_allclose(alone.scores.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reused.scores.numpy(), want, rtol=1e-5, atol=1e-6)


def test_rows_the_score_table_served_are_sent_for_sampled_prompts_only():
    # "A" (sampled) had prompt positions 0-3 and response positions 4-5 served, "B" (not sampled) 0-2
    gaps = [
        Gap(0, "A-1", "A", info(4, outputs=2), np.arange(6), 4, sampled=True),
        Gap(1, "B-1", "B", info(8), np.arange(3), 8, sampled=False),
    ]
    table_scores = torch.arange(27, dtype=torch.float32).reshape(9, 3)
    recovered = Recovered(
        segments=[Segment("A", PROMPT, 0, 4), Segment("A", RESPONSE, 4, 2), Segment("B", PROMPT, 0, 3)],
        starts=[0, 4, 6, 9],
        scores=table_scores,
        positions=np.array([0, 1, 2, 3, 4, 5, 0, 1, 2]),
        unscored=[],
    )

    def plan_with(gaps: list[Gap]) -> StepPlan:
        return StepPlan(np.zeros(1, np.int32), np.zeros(0, bool), [], np.zeros(0, np.int64), gaps)

    served = served_prompt_rows(plan_with(gaps), recovered)
    assert served is not None and served.groups == [("A", PROMPT)] and list(served.starts) == [0, 4]
    assert served.positions.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(served.scores.numpy(), table_scores[:4].numpy())
    assert served_prompt_rows(plan_with([g._replace(sampled=False) for g in gaps]), recovered) is None


def step(token_scores: list[TokenRows], streams=SPLIT) -> StepResult:
    segments = [Segment("a", PROMPT, 0, 3), Segment("c", PROMPT, 5, 2)]
    summaries = Summaries(
        max=torch.ones(2, 3),
        argmax=torch.zeros(2, 3, dtype=torch.int32),
        sum=torch.ones(2, 3),
        count=torch.zeros(2, 3, dtype=torch.int32),
    )
    positions = np.array([0, 1, 2, 5, 6], np.int64)
    return StepResult(7, 123, segments, [0, 1], positions, summaries, [], streams, token_scores=token_scores)


def test_each_pack_gets_one_token_scores_per_request_with_its_columns_and_positions_in_order():
    values = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    computed = TokenRows([("a", PROMPT), ("c", PROMPT)], [0, 3, 5], np.array([4, 5, 6, 5, 6]), values)
    # rows of "a" the score table served in the same step: lower positions, in another part
    served = TokenRows([("a", PROMPT)], [0, 2], np.array([1, 3]), torch.tensor([[-1.0, -2, -3], [-4, -5, -6]]))
    safety, code = (pb.StepBatch.FromString(b.SerializeToString()) for b in encode(step([computed, served])))
    assert (safety.pack, code.pack) == ("safety", "code")
    whole = {"a": ([1, 3, 4, 5, 6], [[-1, -2, -3], [-4, -5, -6], [0, 1, 2], [3, 4, 5], [6, 7, 8]])}
    whole["c"] = ([5, 6], [[9, 10, 11], [12, 13, 14]])
    for batch, columns in ((safety, slice(0, 1)), (code, slice(1, 3))):
        assert [(t.request_id, t.scope) for t in batch.token_scores] == [("a", PROMPT), ("c", PROMPT)]
        for scores in batch.token_scores:
            positions, got = decode_token_scores(scores, columns.stop - columns.start)
            want_positions, want = whole[scores.request_id]
            assert positions.tolist() == want_positions
            np.testing.assert_array_equal(got, np.array(want, np.float32)[:, columns])
        assert len(batch.columns.request_id) == 2  # the summaries are there as before


def test_a_step_without_sampled_rows_carries_no_token_scores():
    for batch in encode(step([])):
        assert not batch.token_scores and len(batch.columns.request_id) == 2
    # the whole path with the default share: the planner lists nothing, the batch stays as it was
    plan = Planner().plan(layout({"A-aaaaaaaa": [0, 1, 2]}, {"A-aaaaaaaa": info(3)}))
    assert plan.token_rows == []


# -- on the wire -------------------------------------------------------------------------------


class SizeRecorder(monitor_pb2_grpc.MonitorServiceServicer):
    """Keeps each message's size and steps."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, list[int]]] = []

    def Ingest(self, request_iterator, context):
        count = 0
        for request in request_iterator:
            self.messages.append((request.ByteSize(), [b.step for b in request.batches]))
            count += len(request.batches)
        return pb.IngestResponse(batches_accepted=count)


def test_the_client_splits_messages_at_the_byte_budget_so_large_token_scores_do_not_sink_a_message(tmp_path):
    recorder = SizeRecorder()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    monitor_pb2_grpc.add_MonitorServiceServicer_to_server(recorder, server)
    target = f"unix://{tmp_path}/s.sock"
    server.add_insecure_port(target)
    server.start()
    try:
        client = SidecarClient(target, interval_seconds=0.05, max_message_bytes=2000)
        client.start()
        sizes = [600] * 6 + [5000, 600]  # the seventh step is over the budget alone
        for step, size in enumerate(sizes):
            scores = pb.TokenScores(request_id="r", scope=PROMPT, values=bytes(size))
            assert client.submit(pb.StepBatch(pack="p", step=step, token_scores=[scores]))
        client.close()
    finally:
        server.stop(0)
    assert [s for _, steps in recorder.messages for s in steps] == list(range(len(sizes)))
    assert all(size <= 2000 or len(steps) == 1 for size, steps in recorder.messages), recorder.messages
    assert client.stats().accepted == len(sizes) and client.stats().dropped == 0
