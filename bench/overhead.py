"""Serving overhead of the monitor: the same workload with the plugin off and on, one run.

Starts vLLM's OpenAI server on the default model three times in a row (monitor off, on,
off; compiled mode, the README's settings) and sends the same fixed workload each time:
N concurrent chat requests of M generated tokens (greedy, ignore_eos, so every run decodes
exactly the same tokens). With the monitor on, the demo deception pack is projected on
every token and shipped to a real sidecar. Prints throughput and latency per run and the
ratios on/off, with off/off as the run's own noise floor.

    SAEMON_HOME=.cache/saemon python bench/overhead.py [--requests 32] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from monitor import model
from monitor.config import load_settings
from monitor.harness.sidecar import SidecarProcess
from monitor.harness.vllm_server import VllmServer
from monitor.lab import demo_pack


def workload(server: VllmServer, requests: int, tokens: int) -> tuple[float, list[float]]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=600, max_retries=0)

    def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        response = client.chat.completions.create(
            model=server.served_name,
            messages=[{"role": "user", "content": f"Write a short story about robot number {i}."}],
            max_tokens=tokens,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        return time.perf_counter() - started, response.usage.completion_tokens

    one(0)  # warm-up request, not measured
    started = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        results = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    generated = sum(n for _, n in results)
    assert generated == requests * tokens, generated
    return generated / elapsed, [latency for latency, _ in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model.apply_offline_environment()
    settings = load_settings()
    path = model.model_path(settings)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pack = demo_pack.build(path, work / "packs", settings.model.name)
        sidecar = SidecarProcess(
            work / "sidecar", {"grpc_listen": f"unix://{work}/s.sock", "probes_dir": str(pack.path.parent)}
        )
        plugin = {"pack": str(pack.path), "sidecar": f"unix://{work}/s.sock"}
        runs = []
        with sidecar:
            for monitored in (False, True, False):
                extra: list[str] = []
                if monitored:
                    extra += ["--additional-config", json.dumps({"saemon": plugin})]
                server = VllmServer(
                    path, settings.model.name, settings.vllm, work / f"vllm-{len(runs)}.log", extra_args=extra
                )
                with server:
                    rate, latencies = workload(server, args.requests, args.tokens)
                runs.append((monitored, rate, latencies))
                print(
                    f"monitor {'on ' if monitored else 'off'}: {rate:7.1f} tokens/s, "
                    f"p50 {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s",
                    flush=True,
                )
            scored = sidecar.metric("saemon_tokens_scored_total", model_name=settings.model.name, scope="response")
    off = [r for r in runs if not r[0]]
    on = next(r for r in runs if r[0])
    off_rate = statistics.mean(r[1] for r in off)
    off_p50 = statistics.mean(statistics.median(r[2]) for r in off)
    print(
        f"\nworkload: {args.requests} concurrent chats x {args.tokens} tokens, greedy, compiled, dtype {settings.vllm.dtype}"
    )
    print(f"throughput on/off: {on[1] / off_rate:.3f}   (off/off noise: {off[1][1] / off[0][1]:.3f})")
    print(f"p50 latency on/off: {statistics.median(on[2]) / off_p50:.3f}")
    # each request feeds back all but its last generated token; special tokens are not scored
    print(f"response tokens the sidecar scored: {scored:.0f} (at most {(args.requests + 1) * (args.tokens - 1)})")


if __name__ == "__main__":
    main()
