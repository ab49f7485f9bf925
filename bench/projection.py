"""Projection kernels: reference vs fused path, against the hardware and against the model.

For each shape (d_model, F watched features, T token rows) it times the reference
(projection_ref) and the fused path (CUDA: the Triton kernel; CPU: the torch CPU path),
and puts the fused time in two perspectives:

- the limit: on CUDA the roofline, max(bytes / HBM bandwidth, FLOPs / tensor peak), with
  the peaks from --bandwidth / --peak-flops (defaults: H100 SXM, 3.35e12 B/s and 989e12
  bf16 FLOP/s); on CPU a bare torch matmul of the same [T, d] x [d, F] shape in float32,
  the practical limit of a path that has to do that matmul;
- the model: the model's forward for the same T tokens, *estimated* as 2 * params * T
  FLOPs (params by d: 576 -> 135M SmolLM2, 2048 -> 1.2B Llama-3.2-1B-like, 4096 -> 8B,
  8192 -> 70B) at the throughput this device reaches on an MLP-shaped [T, d] x [d, 4d]
  matmul in the same dtype. For small T that matmul is bound by reading its weight, as a
  decode step is, so the estimate tracks the regime; it is not a measured forward.

Segment layout: one segment per row up to 256 rows (decode), segments of 1024 rows above
(prefill), unless --layout says otherwise. All rows are unmasked.

    python bench/projection.py                 # CUDA: the full grid; CPU: d 576 2048, F 16 256 1024, T 1 64 1024
    python bench/projection.py --d 4096 --features 1024 --rows 1 8192 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from monitor.kernels import FeatureBank, Summaries
from monitor.kernels.projection import projection_cpu, projection_ref, projection_triton

PARAMS = {576: 135e6, 2048: 1.2e9, 4096: 8e9, 8192: 70e9}


def time_it(fn, args: tuple, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn(*args) (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn(*args)
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            started = time.perf_counter()
            fn(*args)
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def layout(num_rows: int, kind: str, device: torch.device) -> torch.Tensor:
    if kind == "auto":
        kind = "decode" if num_rows <= 256 else "prefill"
    step = 1 if kind == "decode" else 1024
    starts = [*list(range(0, num_rows, step)), num_rows]
    return torch.tensor(starts, dtype=torch.int32, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--d", type=int, nargs="+", choices=sorted(PARAMS), help="default: all; CPU: 576 2048")
    parser.add_argument("--features", type=int, nargs="+", help="default: 16 256 1024 4096 16384; CPU: 16 256 1024")
    parser.add_argument("--rows", type=int, nargs="+", help="default: 1 64 1024 8192; CPU: 1 64 1024")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16; CPU: float32")
    parser.add_argument("--layout", choices=["auto", "decode", "prefill"], default="auto")
    parser.add_argument("--bandwidth", type=float, default=3.35e12, help="HBM bytes/s for the roofline")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="tensor FLOP/s for the roofline")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement (median)")
    parser.add_argument("--no-reference", action="store_true", help="skip timing the reference")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    full = device.type == "cuda"
    args.d = args.d or ([576, 2048, 4096, 8192] if full else [576, 2048])
    args.features = args.features or ([16, 256, 1024, 4096, 16384] if full else [16, 256, 1024])
    args.rows = args.rows or ([1, 64, 1024, 8192] if full else [1, 64, 1024])
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    fused_name = "triton" if device.type == "cuda" else "cpu path"
    if device.type == "cuda":
        limit_note = f"limit = roofline max(bytes / {args.bandwidth:.3g} B/s, FLOPs / {args.peak_flops:.3g} FLOP/s)"
    else:
        limit_note = f"limit = bare torch matmul [T, d] x [d, F] in float32 ({torch.get_num_threads()} threads)"
    print(
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; dtype {dtype}; "
        f"fused = {fused_name}; {limit_note}"
    )
    print(
        "fwd est = the model's forward for T tokens, estimated: 2*params*T FLOPs at this device's "
        "[T, d] x [d, 4d] matmul throughput (not measured)"
    )
    print()
    header = (
        f"{'d':>5} {'F':>6} {'T':>5} {'S':>5} | {'ref ms':>9} {'fused ms':>9} {'speed-up':>8} | "
        f"{'limit ms':>9} {'of limit':>8} | {'fwd est ms':>10} {'proj/fwd':>8}"
    )
    print(header)
    print("-" * len(header))

    gen = torch.Generator(device="cpu").manual_seed(0)
    for d in args.d:
        for num_rows in args.rows:
            x = torch.randn(num_rows, d, generator=gen).to(device=device, dtype=dtype)
            mlp = torch.randn(d, 4 * d, generator=gen).to(device=device, dtype=dtype)
            mlp_s = time_it(torch.matmul, (x, mlp), device, args.repeats)
            forward_s = 2 * PARAMS[d] * num_rows / (2 * num_rows * d * 4 * d / mlp_s)
            del mlp
            seg_starts = layout(num_rows, args.layout, device)
            row_mask = torch.ones(num_rows, dtype=torch.bool, device=device)
            for num_features in args.features:
                directions = torch.randn(num_features, d, generator=gen) / d**0.5
                bank = FeatureBank.from_numpy(
                    directions.numpy(),
                    torch.zeros(num_features).numpy(),
                    ["identity", "relu", "jumprelu"] * (num_features // 3) + ["relu"] * (num_features % 3),
                    torch.full((num_features,), 0.5).numpy(),
                    device=device,
                    dtype=dtype,
                )
                inputs = (x, bank, seg_starts, row_mask)
                if device.type == "cuda":  # steady state of a serving step: preallocated out
                    out = Summaries.empty(seg_starts.shape[0] - 1, num_features, device=device)
                    fused_s = time_it(functools.partial(projection_triton, out=out), inputs, device, args.repeats)
                else:
                    fused_s = time_it(projection_cpu, inputs, device, args.repeats)
                ref_s = float("nan") if args.no_reference else time_it(projection_ref, inputs, device, 3, 1)
                if device.type == "cuda":
                    element = x.element_size()
                    num_segments = seg_starts.shape[0] - 1
                    moved = num_rows * d * element + d * num_features * element + num_segments * num_features * 16
                    flops = 2 * num_rows * d * num_features
                    limit_s = max(moved / args.bandwidth, flops / args.peak_flops)
                else:
                    limit_s = time_it(torch.matmul, (x.float(), bank.weight.float()), device, args.repeats)
                print(
                    f"{d:>5} {num_features:>6} {num_rows:>5} {seg_starts.shape[0] - 1:>5} | "
                    f"{ref_s * 1e3:>9.3f} {fused_s * 1e3:>9.3f} {ref_s / fused_s:>7.1f}x | "
                    f"{limit_s * 1e3:>9.3f} {limit_s / fused_s:>8.0%} | "
                    f"{forward_s * 1e3:>10.3f} {fused_s / forward_s:>8.1%}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
