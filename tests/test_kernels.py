"""The projection kernels against their reference (monitor/kernels/).

Every path must give projection_ref's summaries: the torch CPU path over a grid of shapes,
dtypes and segment layouts; the Triton kernel under Triton's CPU interpreter (in a
subprocess, see kernels_interpreted.py) and on CUDA when there is a GPU.

How results are compared: ``count`` and "no rows" markers exactly; ``max`` and ``sum``
within the tolerance below; ``argmax`` exactly where the segment's best score is unique by
a wide margin, and otherwise by checking that the returned row is an unmasked row of the
segment whose score equals the max. Thresholds are placed in gaps between the feature's
values, so no path can disagree about ``score > threshold`` by rounding.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from monitor.errors import ConfigError, DependencyError, SaemonError
from monitor.kernels import FeatureBank, LayerBanks, Summaries, project_layers, projection
from monitor.kernels.projection import (
    JUMPRELU,
    RELU,
    projection_cpu,
    projection_ref,
    projection_triton,
    summarize_scores_ref,
    triton_interpreted,
)
from monitor.kernels.topk import topk_scores_ref, topk_summaries

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Tolerance of float32 max/sum against the reference, by the dtype of x (and the bank).
# Every path upcasts 16-bit operands exactly (the product of two bf16 or fp16 numbers is
# exact in float32), so on CPU all dtypes differ from the reference only by float32
# summation order. The 16-bit rows are looser for the GPU: there the dot runs on tensor
# cores, whose float32 accumulation does not round to nearest (Fasi et al. 2021 measured
# truncation on V100/T4/A100), a bias that grows with d (up to 8192 in the GPU cases).
TOLERANCE = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 2e-4, "atol": 2e-4},
    torch.float16: {"rtol": 2e-4, "atol": 2e-4},
}
DTYPES = tuple(TOLERANCE)
ACTIVATION_NAMES = ("identity", "relu", "jumprelu")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def fp32_matmul():
    """The reference's float32 matmul on CUDA must not run as TF32 (whatever an earlier
    import set globally): it is the oracle."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


@dataclass(frozen=True)
class Case:
    x: torch.Tensor
    bank: FeatureBank
    seg_starts: torch.Tensor
    row_mask: torch.Tensor

    @property
    def args(self) -> tuple:
        return (self.x, self.bank, self.seg_starts, self.row_mask)


def segment_starts(num_rows: int, layout: str, gen: np.random.Generator) -> list[int]:
    """seg_starts for a layout; the last tenth of the rows is padding past seg_starts[-1]."""
    used = num_rows - num_rows // 10
    if layout == "decode":  # one row per request
        return list(range(used + 1))
    if layout == "prefill":  # one long prompt
        return [0, used]
    if layout == "mixed":  # vLLM chunked prefill: decode rows first, then two prompt chunks
        decode = used // 2
        return [*list(range(decode + 1)), decode + (used - decode) // 3, used]
    assert layout == "ragged"
    starts = [0, 0]  # an empty first segment
    while starts[-1] < used:
        starts.append(min(used, starts[-1] + int(gen.choice([0, 1, 1, 2, 3, 7, 16, 64, 300]))))
    return starts


def thresholds_in_gaps(pre: np.ndarray) -> np.ndarray:
    """Per feature, a threshold >= 0.05 in the widest gap between its values (upper
    quantiles, so counts fire on a fair share of rows)."""
    values = np.sort(pre, axis=0)
    num_rows, num_features = values.shape
    if num_rows < 2:
        return np.maximum(values.max(axis=0, initial=0.0), 0.0) + 0.5
    lo, hi = (0, num_rows - 1) if num_rows < 20 else (int(0.6 * num_rows), int(0.95 * num_rows))
    lows, highs = values[lo:hi], values[lo + 1 : hi + 1]
    mids = (lows + highs) / 2
    gaps = np.where(mids >= 0.05, highs - lows, -1.0)
    best = gaps.argmax(axis=0)
    chosen = mids[best, np.arange(num_features)]
    return np.where(gaps.max(axis=0) > 0, chosen, np.maximum(values[-1], 0.0) + 0.5)


def make_case(
    num_rows: int, d: int, num_features: int, dtype: torch.dtype, layout: str, seed: int, device: str = "cpu"
) -> Case:
    """Random rows (pre-activations ~ N(0, 1)), a bank mixing all three activations, a
    segment layout with a fully masked segment and ~15% masked rows."""
    gen = np.random.default_rng(seed)
    starts = segment_starts(num_rows, layout, gen)
    mask = gen.random(num_rows) > 0.15
    nonempty = [s for s in range(len(starts) - 1) if starts[s + 1] > starts[s]]
    if len(nonempty) >= 2:
        mask[starts[nonempty[0]] : starts[nonempty[0] + 1]] = False
    x = torch.from_numpy(gen.standard_normal((num_rows, d), dtype=np.float32)).to(dtype)
    directions = torch.from_numpy(gen.standard_normal((num_features, d), dtype=np.float32) / np.sqrt(d)).to(dtype)
    bias = (0.1 * gen.standard_normal(num_features)).astype(np.float32)
    pre = x.double().numpy() @ directions.double().numpy().T + bias
    bank = FeatureBank.from_numpy(
        directions.float().numpy(),
        bias,
        [ACTIVATION_NAMES[(i + seed) % 3] for i in range(num_features)],
        thresholds_in_gaps(pre),
        device=device,
        dtype=dtype,
    )
    return Case(
        x.to(device),
        bank,
        torch.tensor(starts, dtype=torch.int32, device=device),
        torch.from_numpy(mask).to(device),
    )


def expected_scores(case: Case) -> np.ndarray:
    """[T, F] scores in float64 numpy, independently of the code under test."""
    bank = case.bank
    pre = case.x.double().cpu().numpy() @ bank.weight.double().cpu().numpy() + bank.bias.double().cpu().numpy()
    code = bank.activation.cpu().numpy()
    threshold = bank.threshold.double().cpu().numpy()
    relu = np.maximum(pre, 0.0)
    jumprelu = np.where(pre > threshold, pre, 0.0)
    return np.where(code == RELU, relu, np.where(code == JUMPRELU, jumprelu, pre))


def segment_rows(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(row index, segment) of every unmasked row inside the segments."""
    starts = case.seg_starts.cpu().numpy().astype(np.int64)
    rows = np.arange(starts[0], starts[-1])
    rows = rows[case.row_mask.cpu().numpy()[rows]]
    return rows, np.searchsorted(starts, rows, side="right") - 1


def assert_summaries_match(got: Summaries, ref: Summaries, case: Case) -> None:
    tol = TOLERANCE[case.x.dtype]
    got = Summaries(*(t.cpu() for t in (got.max, got.argmax, got.sum, got.count)))
    ref = Summaries(*(t.cpu() for t in (ref.max, ref.argmax, ref.sum, ref.count)))
    assert got.max.dtype == torch.float32 and got.argmax.dtype == torch.int32
    assert got.sum.dtype == torch.float32 and got.count.dtype == torch.int32
    torch.testing.assert_close(got.count, ref.count, rtol=0, atol=0)
    torch.testing.assert_close(got.max, ref.max, **tol)

    scores = expected_scores(case)
    rows, segs = segment_rows(case)
    num_segments, num_features = ref.max.shape
    # Sums: summation order differs between paths, so the bound grows with sum |score|.
    magnitude = np.zeros((num_segments, num_features))
    np.add.at(magnitude, segs, np.abs(scores[rows]))
    error = (got.sum.double() - ref.sum.double()).abs().numpy()
    assert (error <= tol["atol"] + tol["rtol"] * magnitude).all(), f"sum off by up to {error.max()}"

    none = ref.argmax.numpy() == -1
    assert (got.argmax.numpy()[none] == -1).all(), "a segment without unmasked rows must report argmax -1"
    assert torch.isneginf(got.max[torch.from_numpy(none)]).all()
    s_idx, f_idx = np.nonzero(~none)
    returned = got.argmax.numpy()[s_idx, f_idx].astype(np.int64)
    starts = case.seg_starts.cpu().numpy()
    assert ((starts[s_idx] <= returned) & (returned < starts[s_idx + 1])).all(), "argmax outside its segment"
    assert case.row_mask.cpu().numpy()[returned].all(), "argmax on a masked row"
    best = ref.max.double().numpy()[s_idx, f_idx]
    slack = tol["atol"] + tol["rtol"] * np.abs(best)
    assert (np.abs(scores[returned, f_idx] - best) <= slack).all(), "argmax row does not reach the max"
    # Where the best row is unique by 10x the tolerance, it must be the same row.
    margin = np.full((num_segments, num_features), np.inf)
    margin[s_idx, f_idx] = 10 * slack
    top = np.full((num_segments, num_features), -np.inf)
    np.maximum.at(top, segs, scores[rows])
    near = np.zeros((num_segments, num_features), dtype=np.int64)
    np.add.at(near, segs, scores[rows] >= top[segs] - margin[segs])
    unique = near == 1
    np.testing.assert_array_equal(got.argmax.numpy()[unique], ref.argmax.numpy()[unique])


# ----------------------------------------------------------------------------------------
# The reference itself


@pytest.mark.parametrize("layout", ["ragged", "decode", "mixed"])
def test_reference_agrees_with_an_independent_float64_computation(layout):
    case = make_case(120, 64, 9, torch.float32, layout, seed=3)
    ref = projection_ref(*case.args)
    scores = expected_scores(case)
    rows, segs = segment_rows(case)
    num_segments = case.seg_starts.shape[0] - 1
    top = np.full((num_segments, 9), -np.inf)
    np.maximum.at(top, segs, scores[rows])
    total = np.zeros((num_segments, 9))
    np.add.at(total, segs, scores[rows])
    count = np.zeros((num_segments, 9), dtype=np.int64)
    np.add.at(count, segs, scores[rows] > case.bank.threshold.numpy())
    np.testing.assert_allclose(ref.max.numpy(), top, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref.sum.numpy(), total, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(ref.count.numpy(), count)
    # the argmax is a row index into x, and holds the max
    found = ref.argmax.numpy() >= 0
    s_idx, f_idx = np.nonzero(found)
    np.testing.assert_allclose(scores[ref.argmax.numpy()[found], f_idx], top[s_idx, f_idx], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------
# CPU path


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_features", [1, 16, 129])
@pytest.mark.parametrize("d", [64, 576])
@pytest.mark.parametrize("num_rows", [1, 7, 64, 300, 2048])
def test_cpu_path_matches_reference_on_ragged_segments(num_rows, d, num_features, dtype):
    case = make_case(num_rows, d, num_features, dtype, "ragged", seed=num_rows + d + num_features)
    assert_summaries_match(projection_cpu(*case.args), projection_ref(*case.args), case)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["decode", "prefill", "mixed"])
def test_cpu_path_matches_reference_on_decode_prefill_and_mixed_steps(layout, dtype):
    case = make_case(300, 64, 16, dtype, layout, seed=7)
    assert_summaries_match(projection_cpu(*case.args), projection_ref(*case.args), case)


@pytest.mark.parametrize("chunk_rows", [1, 5, 64])
def test_cpu_path_gives_the_same_summaries_whatever_the_chunk_size(chunk_rows):
    case = make_case(300, 64, 16, torch.float32, "ragged", seed=11)
    assert_summaries_match(projection_cpu(*case.args, chunk_rows=chunk_rows), projection_ref(*case.args), case)


def tie_case(device: str = "cpu") -> Case:
    """Small integers, so every path computes every score exactly and ties are real.

    Segment 0 = rows 0..5, where rows 1, 3 and 4 tie for the max and row 1 is masked, so
    the first unmasked row reaching the max is 3. Segment 1 = rows 6..9, all scoring 0
    under ReLU for feature 1 (ties at zero go to the first unmasked row, 6)."""
    x = torch.zeros(10, 16)
    x[:, 0] = torch.tensor([1.0, 4.0, 2.0, 4.0, 4.0, -3.0, -1.0, -2.0, -1.0, -5.0])
    x[:, 1] = 1.0
    directions = np.zeros((2, 16), dtype=np.float32)
    directions[0, 0] = 1.0  # identity: x[:, 0]
    directions[1, 0] = 1.0  # relu: max(x[:, 0], 0)
    bank = FeatureBank.from_numpy(directions, [0.0, 0.0], ["identity", "relu"], [2.5, 0.5], device=device)
    mask = torch.ones(10, dtype=torch.bool)
    mask[1] = False
    return Case(x.to(device), bank, torch.tensor([0, 6, 10], dtype=torch.int32, device=device), mask.to(device))


def check_ties(result: Summaries) -> None:
    assert result.argmax.cpu().tolist() == [[3, 3], [6, 6]]
    assert result.max.cpu().tolist() == [[4.0, 4.0], [-1.0, 0.0]]
    assert result.count.cpu().tolist() == [[2, 4], [0, 0]]
    assert result.sum.cpu().tolist() == [[8.0, 11.0], [-9.0, 0.0]]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, None])
def test_ties_go_to_the_first_unmasked_row(chunk_rows):
    case = tie_case()
    check_ties(projection_ref(*case.args))
    check_ties(projection_cpu(*case.args, chunk_rows=chunk_rows))


def test_segments_without_unmasked_rows_report_minus_inf_and_minus_one():
    case = make_case(40, 64, 6, torch.float32, "ragged", seed=5)
    mask = case.row_mask.clone()
    mask[case.seg_starts[2] :] = False  # every segment from the third on is now fully masked
    case = Case(case.x, case.bank, case.seg_starts, mask)
    for result in (projection_ref(*case.args), projection_cpu(*case.args)):
        assert torch.isneginf(result.max[2:]).all() and (result.argmax[2:] == -1).all()
        assert (result.sum[2:] == 0).all() and (result.count[2:] == 0).all()
        assert torch.isneginf(result.max[0]).all()  # the empty first segment


def test_rows_outside_the_segments_are_ignored():
    case = make_case(50, 64, 6, torch.float32, "ragged", seed=9)
    starts = torch.tensor([3, 10, 10, 30], dtype=torch.int32)
    loud = case.x.clone()
    loud[:3] = 1e6  # before seg_starts[0]
    loud[30:] = 1e6  # padding after seg_starts[-1]
    quiet = case.x.clone()
    quiet[:3] = 0.0
    quiet[30:] = 0.0
    for path in (projection_ref, projection_cpu):
        a = path(loud, case.bank, starts, case.row_mask)
        b = path(quiet, case.bank, starts, case.row_mask)
        for field in ("max", "argmax", "sum", "count"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (path.__name__, field)


def test_preallocated_out_receives_the_summaries_in_its_first_rows():
    case = make_case(64, 64, 8, torch.float32, "ragged", seed=2)
    num_segments = case.seg_starts.shape[0] - 1
    out = Summaries.empty(num_segments + 5, 8)
    result = projection(*case.args, out=out)
    assert result.max.data_ptr() == out.max.data_ptr() and result.max.shape[0] == num_segments
    assert result.argmax.data_ptr() == out.argmax.data_ptr()
    assert_summaries_match(result, projection_ref(*case.args), case)


# ----------------------------------------------------------------------------------------
# Types and validation


def test_feature_bank_from_a_pack_keeps_directions_as_columns_and_encodes_activations():
    directions = np.arange(12, dtype=np.float32).reshape(3, 4)  # [F=3, d=4] as packs store them
    bank = FeatureBank.from_numpy(directions, [0.1, 0.2, 0.3], ["identity", "relu", "jumprelu"], [0.0, 1.0, 2.0])
    assert bank.weight.shape == (4, 3) and bank.d_model == 4 and bank.num_features == 3
    assert torch.equal(bank.weight, torch.from_numpy(directions.T))
    assert bank.activation.tolist() == [0, 1, 2] and bank.activation.dtype == torch.int8
    assert bank.bias.dtype == torch.float32 and bank.threshold.tolist() == [0.0, 1.0, 2.0]
    half = FeatureBank.from_numpy(directions, [0.1, 0.2, 0.3], ["relu"] * 3, [0.0] * 3, dtype=torch.bfloat16)
    assert half.weight.dtype == torch.bfloat16 and half.bias.dtype == torch.float32


@pytest.mark.parametrize(
    "activation,threshold,problem",
    [
        (["identity", "gelu"], [0.0, 0.0], "unknown activations"),
        (["identity"], [0.0, 0.0], "need 2"),
        (["identity", "jumprelu"], [0.0, -0.5], "JumpReLU threshold must be >= 0"),
    ],
)
def test_feature_bank_rejects_inconsistent_packs(activation, threshold, problem):
    with pytest.raises(ValueError, match=problem):
        FeatureBank.from_numpy(np.zeros((2, 4), dtype=np.float32), [0.0, 0.0], activation, threshold)


def test_inputs_with_wrong_shapes_or_types_are_refused():
    case = make_case(20, 64, 4, torch.float32, "ragged", seed=1)
    with pytest.raises(ValueError, match="seg_starts must be an int32"):
        projection(case.x, case.bank, case.seg_starts.long(), case.row_mask)
    with pytest.raises(ValueError, match="made for d=64"):
        projection(case.x[:, :32], case.bank, case.seg_starts, case.row_mask)
    with pytest.raises(ValueError, match="row_mask must be a bool"):
        projection(case.x, case.bank, case.seg_starts, case.row_mask.int())
    with pytest.raises(ValueError, match="non-decreasing"):
        projection(case.x, case.bank, torch.tensor([0, 5, 3], dtype=torch.int32), case.row_mask)


# ----------------------------------------------------------------------------------------
# Dispatcher


def test_auto_uses_the_cpu_path_for_cpu_tensors(monkeypatch):
    module = importlib.import_module("monitor.kernels.projection")
    calls = []
    real = module.projection_cpu
    monkeypatch.setattr(module, "projection_cpu", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(module, "projection_triton", lambda *a, **k: pytest.fail("triton chosen for CPU tensors"))
    case = make_case(20, 64, 4, torch.float32, "ragged", seed=1)
    assert_summaries_match(projection(*case.args), projection_ref(*case.args), case)
    assert calls == [1]


def test_requested_triton_backend_refuses_cpu_tensors_outside_the_interpreter():
    if triton_interpreted():
        pytest.skip("this session runs Triton's interpreter, which accepts CPU tensors")
    case = make_case(20, 64, 4, torch.float32, "ragged", seed=1)
    expected = ConfigError if importlib.util.find_spec("triton") else DependencyError
    with pytest.raises(expected, match="backend='cpu'"):
        projection(*case.args, backend="triton")


def test_unknown_backend_is_a_configuration_error():
    case = make_case(20, 64, 4, torch.float32, "ragged", seed=1)
    with pytest.raises(ConfigError, match=r"unknown projection backend 'cuda'.*auto, triton, cpu, reference"):
        projection(*case.args, backend="cuda")


def test_every_backend_that_runs_here_gives_the_reference_summaries():
    case = make_case(64, 64, 8, torch.bfloat16, "mixed", seed=4)
    ref = projection_ref(*case.args)
    for backend in ("auto", "cpu", "reference"):
        assert_summaries_match(projection(*case.args, backend=backend), ref, case)


# ----------------------------------------------------------------------------------------
# Full-SAE TopK mode


def topk_sae(d: int, n: int, seed: int):
    gen = np.random.default_rng(seed)
    W_enc = gen.standard_normal((d, n), dtype=np.float32) / np.sqrt(d)
    b_enc = (0.1 * gen.standard_normal(n)).astype(np.float32)
    b_dec = (0.1 * gen.standard_normal(d)).astype(np.float32)
    watched = np.array([0, 3, 17, n - 1, 42])
    return W_enc, b_enc, b_dec, watched


@pytest.mark.parametrize("subtract_b_dec", [True, False])
def test_topk_scores_match_a_numpy_encode(subtract_b_dec):
    d, n, k = 64, 256, 8
    W_enc, b_enc, b_dec, watched = topk_sae(d, n, seed=0)
    x = np.random.default_rng(1).standard_normal((50, d), dtype=np.float32)
    inputs = x - b_dec if subtract_b_dec else x
    z = np.maximum(inputs.astype(np.float64) @ W_enc + b_enc, 0.0)
    kth = -np.sort(-z, axis=1)[:, k - 1 : k]  # the k-th largest per row
    expected = np.where(z >= kth, z, 0.0)[:, watched]
    got = topk_scores_ref(
        torch.from_numpy(x),
        torch.from_numpy(W_enc),
        torch.from_numpy(b_enc),
        torch.from_numpy(b_dec) if subtract_b_dec else None,
        k,
        torch.from_numpy(watched),
    )
    assert got.shape == (50, len(watched)) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ((got > 0).sum(dim=1) <= k).all()


def test_topk_summaries_reduce_the_watched_latents_like_the_projection():
    d, n, k = 64, 256, 8
    W_enc, b_enc, b_dec, watched = (torch.from_numpy(a) for a in topk_sae(d, n, seed=2))
    case = make_case(90, d, 1, torch.float32, "ragged", seed=6)
    scores = topk_scores_ref(case.x, W_enc, b_enc, b_dec, k, watched)
    ref = summarize_scores_ref(scores, torch.zeros(len(watched)), case.seg_starts, case.row_mask)
    for chunk_rows in (7, None):
        got = topk_summaries(
            case.x, W_enc, b_enc, b_dec, k, watched, case.seg_starts, case.row_mask, chunk_rows=chunk_rows
        )
        torch.testing.assert_close(got.max, ref.max, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.sum, ref.sum, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.count, ref.count) and torch.equal(got.argmax, ref.argmax)
    assert ref.count.sum() > 0  # some watched latents are active somewhere


# ----------------------------------------------------------------------------------------
# Triton kernel under the interpreter (CPU) and on CUDA


def test_triton_kernel_matches_reference_under_the_interpreter():
    """The kernel's logic, run by Triton's interpreter on small shapes. TRITON_INTERPRET is
    read when kernels are defined, so the cases run in a child process that sets it (this
    process and the vLLM processes other tests start must not inherit it)."""
    pytest.importorskip("triton", reason="Triton is not installed: the kernel cannot be interpreted")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "kernels_interpreted.py")],
        check=False,
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " passed" in output and "skipped" not in output, output


CUDA_SHAPES = [
    (1, 4096, 4096, "decode"),
    (64, 2048, 1024, "decode"),
    (300, 576, 129, "ragged"),
    (2304, 4096, 512, "mixed"),
    (1024, 2048, 1024, "ragged"),
    (8192, 8192, 4096, "prefill"),
]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.usefixtures("fp32_matmul")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_rows,d,num_features,layout", CUDA_SHAPES)
def test_triton_matches_reference_on_cuda(num_rows, d, num_features, layout, dtype):
    case = make_case(num_rows, d, num_features, dtype, layout, seed=num_rows + d, device="cuda")
    assert_summaries_match(projection_triton(*case.args), projection_ref(*case.args), case)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.usefixtures("fp32_matmul")
def test_triton_matches_reference_when_x_and_bank_dtypes_differ():
    case = make_case(300, 576, 64, torch.float32, "ragged", seed=8, device="cuda")
    half = Case(case.x.bfloat16(), case.bank, case.seg_starts, case.row_mask)  # fp32 bank, bf16 rows
    assert_summaries_match(projection_triton(*half.args), projection_ref(*half.args), half)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.usefixtures("fp32_matmul")
def test_triton_with_out_allocates_nothing_and_replays_in_a_cuda_graph():
    case = make_case(256, 576, 64, torch.bfloat16, "ragged", seed=12, device="cuda")
    num_segments = case.seg_starts.shape[0] - 1
    out = Summaries.empty(num_segments + 8, 64, device="cuda")
    # Static buffers, first filled with other data of the same shapes.
    x = torch.randn_like(case.x)
    seg_starts = torch.linspace(0, 200, num_segments + 1, device="cuda").int()
    row_mask = torch.ones_like(case.row_mask)
    projection(x, case.bank, seg_starts, row_mask, out=out, backend="triton")  # compiles
    torch.cuda.synchronize()
    allocations = torch.cuda.memory_stats()["allocation.all.allocated"]
    projection(x, case.bank, seg_starts, row_mask, out=out, backend="triton")
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == allocations

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # fails on any host sync
        result = projection(x, case.bank, seg_starts, row_mask, out=out, backend="triton")
    x.copy_(case.x)
    seg_starts.copy_(case.seg_starts)
    row_mask.copy_(case.row_mask)
    graph.replay()
    torch.cuda.synchronize()
    assert_summaries_match(result, projection_ref(*case.args), case)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.usefixtures("fp32_matmul")
def test_auto_uses_triton_on_cuda_and_falls_back_once_without_it(monkeypatch, caplog):
    module = importlib.import_module("monitor.kernels.projection")
    case = make_case(64, 576, 16, torch.bfloat16, "mixed", seed=13, device="cuda")
    calls = []
    real = module.projection_triton
    monkeypatch.setattr(module, "projection_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert_summaries_match(projection(*case.args), projection_ref(*case.args), case)
    assert calls == [1]
    monkeypatch.setattr(module, "triton", None)
    monkeypatch.setattr(module, "_fallbacks_logged", set())
    with caplog.at_level(logging.WARNING, logger=module.__name__):
        projection(*case.args)
        result = projection(*case.args)
    assert len([r for r in caplog.records if "Triton is not importable" in r.message]) == 1
    assert_summaries_match(result, projection_ref(*case.args), case)
    with pytest.raises(SaemonError, match="triton"):
        projection(*case.args, backend="triton")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["decode", "prefill", "mixed", "ragged"])
def test_several_layers_at_once_match_the_reference_per_layer_in_pack_order(layout, dtype):
    """project_layers (the CPU path fuses the layers into one batched matmul) gives each
    layer's projection_ref summaries, at that layer's columns of an interleaved pack order."""
    widths = (3, 16, 1)
    cases = [make_case(300, 64, f, dtype, layout, seed=5) for f in widths]
    order = np.random.default_rng(3).permutation(sum(widths))
    columns = np.split(order, np.cumsum(widths)[:-1])
    banks = LayerBanks.stack(
        [(layer, case.bank, cols) for layer, case, cols in zip((4, 9, 20), cases, columns, strict=True)]
    )
    xs = torch.stack([case.x for case in cases])
    for backend in ("cpu", "reference"):
        got = project_layers(xs, banks, cases[0].seg_starts, cases[0].row_mask, backend=backend)
        for case, cols in zip(cases, columns, strict=True):
            index = torch.from_numpy(cols)
            part = Summaries(got.max[:, index], got.argmax[:, index], got.sum[:, index], got.count[:, index])
            assert_summaries_match(part, projection_ref(*case.args), case)


def test_stacked_banks_must_cover_the_pack_columns_once_and_read_one_width():
    one = make_case(8, 16, 2, torch.float32, "decode", seed=1).bank
    with pytest.raises(ValueError, match="cover the output features"):
        LayerBanks.stack([(1, one, np.array([0, 2]))])
    with pytest.raises(ValueError, match="one bank per layer"):
        LayerBanks.stack([(1, one, np.array([0, 1])), (1, one, np.array([2, 3]))])
    other = make_case(8, 32, 2, torch.float32, "decode", seed=1).bank
    with pytest.raises(ValueError, match="one model, one width"):
        LayerBanks.stack([(1, one, np.array([0, 1])), (2, other, np.array([2, 3]))])
