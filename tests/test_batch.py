"""Row attribution in the plugin: segments, dedup by position, scopes, special tokens."""

import numpy as np

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm.batch import Planner, RequestInfo, StepLayout, external_id

PROMPT, RESPONSE = pb.TOKEN_SCOPE_PROMPT, pb.TOKEN_SCOPE_RESPONSE


def info(prompt_len: int, outputs: int = 0, max_tokens: int | None = 16, prompt=None) -> RequestInfo:
    prompt = prompt if prompt is not None else list(range(100, 100 + prompt_len))
    return RequestInfo(prompt_len, max_tokens, prompt, list(range(500, 500 + outputs)))


def layout(rows: dict[str, list[int]], infos: dict[str, RequestInfo], padding: int = 0) -> StepLayout:
    """`rows`: each request's positions this step, in row order; `padding` rows at the end."""
    qsl = np.cumsum([0] + [len(p) for p in rows.values()])
    positions = np.array([p for ps in rows.values() for p in ps] + [0] * padding)
    return StepLayout(list(rows), qsl, positions, infos)


def described(plan) -> list[tuple[str, int, int, int]]:
    return [(s.request_id, s.scope, s.first_position, s.num_tokens) for s in plan.segments]


def test_worker_request_ids_map_back_to_the_external_id():
    assert external_id("chatcmpl-4f2a-1a2b3c4d") == "chatcmpl-4f2a"
    assert external_id("cmpl-abc-0-deadbeef") == "cmpl-abc-0"
    assert external_id("my-trace-id-01234567") == "my-trace-id"
    assert external_id("plain") == "plain"


def test_chunked_prefill_then_decode_scores_every_position_once():
    planner = Planner()
    a = {"A-xxxxxxxx": info(10)}
    p1 = planner.plan(layout({"A-xxxxxxxx": [0, 1, 2, 3, 4, 5]}, a))
    p2 = planner.plan(layout({"A-xxxxxxxx": [6, 7, 8, 9]}, a))
    p3 = planner.plan(layout({"A-xxxxxxxx": [10]}, {"A-xxxxxxxx": info(10, outputs=1)}))
    assert described(p1) == [("A", PROMPT, 0, 6)]
    assert described(p2) == [("A", PROMPT, 6, 4)]
    assert described(p3) == [("A", RESPONSE, 10, 1)]
    assert p1.row_mask.all() and p2.row_mask.all() and p3.row_mask.all()


def test_preemption_recompute_is_not_scored_twice():
    planner = Planner()
    infos = {"A-xxxxxxxx": info(4, outputs=3)}
    planner.plan(layout({"A-xxxxxxxx": [0, 1, 2, 3]}, infos))
    planner.plan(layout({"A-xxxxxxxx": [4]}, infos))
    planner.plan(layout({"A-xxxxxxxx": [5]}, infos))
    # preempted, then recomputed from scratch in one chunk that also takes the next token
    plan = planner.plan(layout({"A-xxxxxxxx": [0, 1, 2, 3, 4, 5, 6]}, infos))
    assert plan.row_mask.tolist() == [False] * 6 + [True]
    assert described(plan) == [("A", PROMPT, 0, 0), ("A", RESPONSE, 6, 1)]
    np.testing.assert_array_equal(plan.seg_starts, [0, 4, 7])  # segments still tile the rows


def test_a_step_with_several_requests_and_padding_rows():
    planner = Planner()
    infos = {"A-aaaaaaaa": info(3), "B-bbbbbbbb": info(2, outputs=4), "C-cccccccc": info(5)}
    plan = planner.plan(layout({"A-aaaaaaaa": [0, 1, 2], "B-bbbbbbbb": [5], "C-cccccccc": [0, 1]}, infos, padding=3))
    assert described(plan) == [("A", PROMPT, 0, 3), ("B", RESPONSE, 5, 1), ("C", PROMPT, 0, 2)]
    np.testing.assert_array_equal(plan.seg_starts, [0, 3, 4, 6])
    assert len(plan.row_mask) == 6  # padding rows are not part of the plan


def test_a_chunk_across_the_prompt_boundary_splits_into_two_scopes():
    planner = Planner()
    plan = planner.plan(layout({"A-xxxxxxxx": [2, 3, 4, 5]}, {"A-xxxxxxxx": info(4, outputs=2)}))
    assert described(plan) == [("A", PROMPT, 2, 2), ("A", RESPONSE, 4, 2)]


def test_special_tokens_are_masked_and_not_counted():
    bos, im_start, im_end = 1, 1, 2
    prompt = [bos, 30, 31, im_end, im_start, 40]
    planner = Planner(special_token_ids={bos, im_start, im_end})
    plan = planner.plan(layout({"A-xxxxxxxx": list(range(6))}, {"A-xxxxxxxx": info(6, prompt=prompt)}))
    assert plan.row_mask.tolist() == [False, True, True, False, False, True]
    assert described(plan) == [("A", PROMPT, 1, 3)]


def test_end_markers_carry_token_counts_and_length_finishes():
    planner = Planner()
    planner.plan(
        layout(
            {"A-aaaaaaaa": [0, 1], "B-bbbbbbbb": [0]},
            {"A-aaaaaaaa": info(2, outputs=4, max_tokens=4), "B-bbbbbbbb": info(1, outputs=2)},
        )
    )
    ends = {e.request_id: e for e in planner.finish(["A-aaaaaaaa", "B-bbbbbbbb", "never-seen-xxxxxxxx"])}
    assert set(ends) == {"A", "B"}
    assert ends["A"].finish_reason == pb.FINISH_REASON_LENGTH
    assert (ends["A"].prompt_tokens, ends["A"].response_tokens) == (2, 4)
    assert ends["B"].finish_reason == pb.FINISH_REASON_UNSPECIFIED
    assert planner.tracks == {}


def test_an_empty_step_plans_nothing():
    plan = Planner().plan(layout({}, {}))
    assert plan.segments == [] and plan.seg_starts.tolist() == [0] and plan.row_mask.size == 0


def test_a_generated_special_token_fed_back_in_a_decode_step_is_masked():
    im_end = 2
    planner = Planner(special_token_ids={im_end})
    prompt = info(3)
    planner.plan(layout({"A-xxxxxxxx": [0, 1, 2]}, {"A-xxxxxxxx": prompt}))
    after_eos = RequestInfo(3, 16, prompt.prompt_token_ids, [im_end])
    plan = planner.plan(layout({"A-xxxxxxxx": [3]}, {"A-xxxxxxxx": after_eos}))
    assert plan.row_mask.tolist() == [False]
    assert described(plan) == [("A", RESPONSE, 3, 0)]
    ordinary = RequestInfo(3, 16, prompt.prompt_token_ids, [im_end, 77])
    plan = planner.plan(layout({"A-xxxxxxxx": [4]}, {"A-xxxxxxxx": ordinary}))
    assert described(plan) == [("A", RESPONSE, 4, 1)]


def test_end_markers_carry_the_token_ids_only_when_asked():
    request = info(2, outputs=3)
    planners = Planner(), Planner()
    for planner in planners:
        planner.plan(layout({"A-aaaaaaaa": [0, 1]}, {"A-aaaaaaaa": request}))
    (plain,) = planners[0].finish(["A-aaaaaaaa"])
    (end,) = planners[1].finish(["A-aaaaaaaa"], token_ids=True)
    assert list(end.token_ids) == [*request.prompt_token_ids, *request.output_token_ids]
    assert list(plain.token_ids) == []
