"""The plugin's columnar StepBatch: what the worker encodes is what the sidecar decodes and
scores, identically to the one-message-per-request form; malformed columns are refused with
the field and the sizes named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import summary, write_pack

from monitor.config import SidecarSettings
from monitor.kernels import Summaries
from monitor.pack import load_pack_dir
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.scorer import Rejected, Scorer, decode
from monitor.vllm.batch import Segment
from monitor.vllm.wire import StepResult, Stream, encode

STREAM = Stream("m", "safety", "1")
#: two packs of one projection: "safety" owns column 0, "code" columns 1 and 2
SPLIT = (Stream("m", "safety", "1", 0, 1), Stream("m", "code", "2", 1, 2))


def result(streams: tuple[Stream, ...] = (STREAM,), unscored=()) -> StepResult:
    """Three segments (the middle one fully masked, not shipped); row indices are mapped to
    absolute positions on the way (-1: no row)."""
    segments = [
        Segment("a", pb.TOKEN_SCOPE_PROMPT, 0, 3),
        Segment("b", pb.TOKEN_SCOPE_RESPONSE, 9, 0),
        Segment("c", pb.TOKEN_SCOPE_RESPONSE, 40, 1),
    ]
    positions = np.array([0, 1, 2, 9, 40], dtype=np.int64)
    summaries = Summaries(
        max=torch.tensor([[1.0, 0.5, 2.0], [-np.inf, -np.inf, -np.inf], [3.0, 0.25, 4.0]]),
        argmax=torch.tensor([[2, 0, 1], [-1, -1, -1], [4, 4, 4]], dtype=torch.int32),
        sum=torch.tensor([[2.5, 1.0, 3.0], [0.0, 0.0, 0.0], [3.0, 0.25, 4.0]]),
        count=torch.tensor([[1, 0, 2], [0, 0, 0], [1, 0, 1]], dtype=torch.int32),
    )
    ends = [pb.RequestEnd(request_id="z", finish_reason=pb.FINISH_REASON_LENGTH)]
    return StepResult(7, 123, segments, [0, 2], positions, summaries, ends, streams, list(unscored))


def test_an_encoded_step_decodes_to_the_kept_segments_with_positions_in_pack_order():
    (encoded,) = encode(result())
    batch = pb.StepBatch.FromString(encoded.SerializeToString())
    assert (batch.model_name, batch.pack, batch.pack_version, batch.step) == ("m", "safety", "1", 7)
    assert not batch.requests and [e.request_id for e in batch.ends] == ["z"]
    columns = decode(batch, features=3)
    assert columns.request_ids == ["a", "c"]
    assert columns.scopes.tolist() == [pb.TOKEN_SCOPE_PROMPT, pb.TOKEN_SCOPE_RESPONSE]
    assert columns.first_positions.tolist() == [0, 40] and columns.num_tokens.tolist() == [3, 1]
    np.testing.assert_array_equal(columns.max, [[1.0, 0.5, 2.0], [3.0, 0.25, 4.0]])
    np.testing.assert_array_equal(columns.argmax, [[2, 0, 1], [40, 40, 40]])
    np.testing.assert_array_equal(columns.sum, [[2.5, 1.0, 3.0], [3.0, 0.25, 4.0]])
    np.testing.assert_array_equal(columns.count, [[1, 0, 2], [1, 0, 1]])


def test_a_step_with_only_ends_carries_no_summaries():
    empty = StepResult(1, 0, [], [], np.zeros(0, np.int64), None, [pb.RequestEnd(request_id="z")], (STREAM,))
    (batch,) = encode(empty)
    assert not batch.HasField("columns") and len(batch.ends) == 1
    assert decode(batch, features=3).request_ids == []


def test_several_packs_get_one_batch_each_with_their_columns_and_the_request_facts_once():
    lost = pb.UnscoredTokens(request_id="a", reason=pb.UNSCORED_REASON_NOT_SEEN, count=4)
    safety, code = encode(result(SPLIT, [lost]))
    assert (safety.pack, code.pack, code.pack_version) == ("safety", "code", "2")
    whole = decode(encode(result())[0], features=3)
    for batch, columns in ((safety, slice(0, 1)), (code, slice(1, 3))):
        got = decode(batch, features=columns.stop - columns.start)
        assert got.request_ids == whole.request_ids and got.first_positions.tolist() == [0, 40]
        for name in ("max", "argmax", "sum", "count"):
            np.testing.assert_array_equal(getattr(got, name), getattr(whole, name)[:, columns])
    # unscored counts ride with the first pack's batch, end markers with the last one, so no
    # pack's rows of the step arrive after its request was closed
    assert list(safety.unscored) == [lost] and not code.unscored
    assert not safety.ends and [e.request_id for e in code.ends] == ["z"]


def columnar(rows: list[pb.RequestSummary], features: int) -> pb.StepBatch:
    """The same summaries as SummaryColumns."""
    arrays = {
        "max": ("<f4", [r.max for r in rows]),
        "argmax_position": ("<i8", [r.argmax_position for r in rows]),
        "sum": ("<f4", [r.sum for r in rows]),
        "count_above": ("<u4", [r.count_above for r in rows]),
    }
    columns = pb.SummaryColumns(
        request_id=[r.request_id for r in rows],
        scope=[r.scope for r in rows],
        first_position=[r.first_position for r in rows],
        num_tokens=[r.num_tokens for r in rows],
        **{
            name: np.array(values, dtype=dtype).reshape(len(rows), features).tobytes()
            for name, (dtype, values) in arrays.items()
        },
    )
    return pb.StepBatch(model_name="SmolLM2-135M-Instruct", pack="safety", pack_version="1", columns=columns)


def test_both_wire_forms_score_identically(tmp_path):
    write_pack(tmp_path)
    steps = [
        [summary("r", [0.2, 0.0], 0, n=10, sums=[1.0, 0.5]), summary("q", [0.9, 0.9], 0)],
        [summary("r", [0.9, 0.1], 10), summary("q", [0.1, 0.0], 1)],
        [summary("r", [0.3, 0.95], 11)],
    ]
    outcomes = []
    for form in ("rows", "columns"):
        scorer = Scorer(SidecarSettings(), SidecarMetrics(), clock=lambda: 1000.0)
        scorer.set_packs(load_pack_dir(tmp_path))
        kinds = []
        for rows in steps:
            if form == "rows":
                batch = pb.StepBatch(model_name="SmolLM2-135M-Instruct", pack="safety", pack_version="1", requests=rows)
            else:
                batch = columnar(rows, 2)
            kinds += [(d.request_id, d.probe, d.kind, d.score) for d in scorer.apply(batch, scorer.validate(batch))]
        reports = {rid: [s.SerializeToString() for s in scorer.report(rid).scores] for rid in ("r", "q")}
        outcomes.append((kinds, reports))
    assert outcomes[0][0] and outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        (
            lambda c: setattr(c, "max", c.max[:-4]),
            "malformed",
            "SummaryColumns.max has 4 bytes; 1 rows x 2 features of float32 need 8",
        ),
        (lambda c: c.scope.append(pb.TOKEN_SCOPE_PROMPT), "malformed", "1 request ids but 2 scopes"),
    ],
)
def test_malformed_columns_are_rejected_naming_the_problem(tmp_path, change, reason, message):
    write_pack(tmp_path)
    scorer = Scorer(SidecarSettings(), SidecarMetrics())
    scorer.set_packs(load_pack_dir(tmp_path))
    batch = columnar([summary("r", [0.2, 0.0], 0)], 2)
    change(batch.columns)
    with pytest.raises(Rejected) as raised:
        scorer.validate(batch)
    assert raised.value.reason == reason and message in str(raised.value)


def test_a_batch_with_both_forms_is_refused(tmp_path):
    write_pack(tmp_path)
    scorer = Scorer(SidecarSettings(), SidecarMetrics())
    scorer.set_packs(load_pack_dir(tmp_path))
    batch = columnar([summary("r", [0.2, 0.0], 0)], 2)
    batch.requests.append(summary("r", [0.2, 0.0], 1))
    with pytest.raises(Rejected, match="both requests and columns"):
        scorer.validate(batch)


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        (lambda c: c.num_tokens.__setitem__(1, 0), "malformed", "num_tokens is 0"),
        (lambda c: c.scope.__setitem__(1, pb.TOKEN_SCOPE_UNSPECIFIED), "malformed", "scope is unspecified"),
        (lambda c: c.first_position.__setitem__(1, -1), "out_of_range", "first_position"),
        (
            lambda c: setattr(c, "sum", np.array([0.2, 0, np.nan, 0], "<f4").tobytes()),
            "non_finite",
            "NaN or infinite",
        ),
    ],
)
def test_a_bad_column_row_is_refused_alone(tmp_path, change, reason, message):
    write_pack(tmp_path)
    scorer = Scorer(SidecarSettings(), SidecarMetrics())
    scorer.set_packs(load_pack_dir(tmp_path))
    batch = columnar([summary("r", [0.2, 0.0], 0), summary("q", [0.3, 0.0], 0)], 2)
    change(batch.columns)
    columns = scorer.validate(batch)
    assert columns.request_ids == ["r"] and columns.rejected == {reason: 1} and message in columns.first_error
