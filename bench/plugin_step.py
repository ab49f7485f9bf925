"""The plugin's cost on vLLM's engine thread, measured inside one process.

Runs the offline engine in this process (uni executor, no engine-core subprocess), so the
plugin's per-step hook (read the batch layout, plan rows, project, hand over to the
shipper) can be timed directly, and the same workload with the monitor off and on gives a
throughput ratio without HTTP clients competing for the two cores. A real sidecar receives
the scores. Complements bench/overhead.py, whose serving numbers on a small shared machine
vary more between identical runs than the effect being measured.

    SAEMON_HOME=.cache/saemon python bench/plugin_step.py [--requests 32] [--tokens 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(mode: str, requests: int, tokens: int, work: Path) -> None:
    """One engine in this process; prints a RESULT line."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams

    from monitor import model
    from monitor.config import load_settings
    from monitor.sidecar.process import SidecarProcess
    from monitor.vllm import worker

    spent = {"seconds": 0.0, "steps": 0}
    step = worker.WorkerMonitor.step

    def timed(self, scheduler_output):
        started = time.perf_counter()
        step(self, scheduler_output)
        spent["seconds"] += time.perf_counter() - started
        spent["steps"] += 1

    worker.WorkerMonitor.step = timed
    settings = load_settings()
    path = model.model_path(settings)
    engine = {"additional_config": {"saemon": {"pack": str(work / "packs" / "demo-deception.yaml"), "sidecar": f"unix://{work}/s.sock"}}}
    sidecar = SidecarProcess(work / f"sidecar-{mode}", {"grpc_listen": f"unix://{work}/s.sock", "probes_dir": str(work / "packs")})
    with sidecar:
        llm = LLM(model=str(path), dtype=settings.vllm.dtype, max_model_len=1024, enable_prefix_caching=False,
                  distributed_executor_backend="uni", **(engine if mode == "on" else {}))  # fmt: skip
        prompts = [[{"role": "user", "content": f"Write a short story about robot number {i}."}] for i in range(requests)]
        llm.chat(prompts[:2], SamplingParams(temperature=0, max_tokens=8))  # warm-up
        spent.update(seconds=0.0, steps=0)
        started = time.perf_counter()
        llm.chat(prompts, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
        elapsed = time.perf_counter() - started
        sidecar.stop()
    print(f"RESULT {mode} {requests * tokens / elapsed:.1f} {elapsed:.3f} {spent['seconds']:.4f} {spent['steps']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--mode", choices=["off", "on"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run(args.mode, args.requests, args.tokens, args.work)
        return

    from monitor import model
    from monitor.config import load_settings
    from monitor.probes import demo_pack

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo_pack.build(model.model_path(settings), work / "packs", settings.model.name)
        results = {}
        for mode in ("off", "on", "off"):  # each engine in a fresh process
            out = subprocess.run(
                [sys.executable, __file__, "--mode", mode, "--work", str(work),
                 "--requests", str(args.requests), "--tokens", str(args.tokens)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            line = next(li for li in out.splitlines() if li.startswith("RESULT"))
            _, _, rate, elapsed, hook, steps = line.split()
            results.setdefault(mode, []).append((float(rate), float(elapsed), float(hook), int(steps)))
            print(f"monitor {mode:3}: {float(rate):7.1f} tokens/s over {float(elapsed):.2f} s", flush=True)
    off = sum(r[0] for r in results["off"]) / len(results["off"])
    rate, elapsed, hook, steps = results["on"][0]
    print(f"\nworkload: {args.requests} chats x {args.tokens} tokens, greedy, compiled, in-process engine")
    print(f"throughput on/off: {rate / off:.3f}   (off/off noise: {results['off'][1][0] / results['off'][0][0]:.3f})")
    print(f"plugin hook: {hook * 1000 / steps:.2f} ms per step over {steps} steps = {hook / elapsed:.1%} of the run")


if __name__ == "__main__":
    main()
