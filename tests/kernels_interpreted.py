"""The Triton projection kernel under Triton's CPU interpreter, on small shapes.

Not collected by a plain ``pytest`` run (the name does not start with ``test_``):
``test_kernels.py::test_triton_kernel_matches_reference_under_the_interpreter`` runs it in
a child process with ``TRITON_INTERPRET=1``. Run by hand the same way:

    TRITON_INTERPRET=1 python -m pytest tests/kernels_interpreted.py

Without that variable the first test fails rather than letting the rest run compiled.
``blocks`` forces small tiles so that segments span several row tiles (atomic merges
across programs) and tiles hit both reductions (a few long segments / many short ones).
"""

import pytest
import torch
from test_kernels import DTYPES, Case, assert_summaries_match, check_ties, make_case, tie_case

from monitor.kernels import Summaries
from monitor.kernels.projection import projection_ref, projection_triton, triton_interpreted


def test_the_kernel_runs_in_triton_interpreter():
    assert triton_interpreted(), "set TRITON_INTERPRET=1 before Python starts (test_kernels.py does)"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "num_rows,d,num_features,layout,blocks",
    [
        (64, 128, 32, "ragged", (16, 16, 32)),  # empty, masked and multi-tile segments, padding tile
        (37, 80, 20, "ragged", None),  # T, d and F not multiples of the tiles
        (48, 64, 24, "decode", (16, 16, 32)),  # S == T: one atomic per row
        (64, 128, 32, "prefill", (16, 32, 64)),  # one segment across row tiles
        (64, 64, 16, "mixed", (32, 16, 32)),  # decode rows, then two prompt chunks
        (1, 64, 1, "ragged", None),  # a single row
        (300, 64, 16, "mixed", None),  # the launcher's prefill-sized tiles (128 x 128)
    ],
)
def test_kernel_matches_reference(num_rows, d, num_features, layout, blocks, dtype):
    case = make_case(num_rows, d, num_features, dtype, layout, seed=num_rows + num_features)
    assert_summaries_match(projection_triton(*case.args, blocks=blocks), projection_ref(*case.args), case)


def test_kernel_matches_reference_when_rows_are_16_bit_and_the_bank_float32():
    case = make_case(40, 64, 16, torch.float32, "ragged", seed=21)
    half = Case(case.x.half(), case.bank, case.seg_starts, case.row_mask)
    assert_summaries_match(projection_triton(*half.args, blocks=(16, 16, 32)), projection_ref(*half.args), half)


@pytest.mark.parametrize("blocks", [(16, 16, 16), None])
def test_ties_go_to_the_first_unmasked_row(blocks):
    check_ties(projection_triton(*tie_case().args, blocks=blocks))


def test_rows_outside_the_segments_are_ignored():
    case = make_case(64, 64, 8, torch.float32, "ragged", seed=3)
    starts = torch.tensor([20, 25, 25, 40], dtype=torch.int32)  # row tiles 0 and 3 are padding
    loud = case.x.clone()
    loud[:20] = 1e6
    loud[40:] = 1e6
    narrowed = Case(loud, case.bank, starts, case.row_mask)
    assert_summaries_match(
        projection_triton(*narrowed.args, blocks=(16, 16, 32)), projection_ref(*narrowed.args), narrowed
    )


def test_reused_out_buffers_are_reset_by_the_launcher():
    first = make_case(48, 64, 16, torch.float32, "ragged", seed=4)
    second = make_case(48, 64, 16, torch.float32, "decode", seed=5)
    rows = max(s.seg_starts.shape[0] - 1 for s in (first, second))
    out = Summaries.empty(rows + 3, 16)
    projection_triton(*first.args, out=out, blocks=(16, 16, 32))
    result = projection_triton(*second.args, out=out, blocks=(16, 16, 32))
    assert result.max.data_ptr() == out.max.data_ptr()
    assert_summaries_match(result, projection_ref(*second.args), second)
    smaller = Case(second.x, second.bank, second.seg_starts[:4].contiguous(), second.row_mask)
    assert_summaries_match(
        projection_triton(*smaller.args, out=out, blocks=(16, 16, 32)), projection_ref(*smaller.args), smaller
    )


def test_out_buffers_not_laid_out_by_summaries_empty_are_refused():
    case = make_case(16, 64, 4, torch.float32, "ragged", seed=6)
    rows = case.seg_starts.shape[0] - 1
    wrong = Summaries(
        torch.empty(rows, 4),
        torch.empty(rows, 4, dtype=torch.int32),
        torch.empty(rows, 4),
        torch.empty(rows, 4, dtype=torch.int32),
    )
    with pytest.raises(ValueError, match=r"Summaries.empty"):
        projection_triton(*case.args, out=wrong)
