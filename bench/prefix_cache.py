"""What prefix caching gains a monitored server: a shared-system-prompt chat workload.

Starts vLLM's OpenAI server on the default model four times in a row (compiled mode, the
README's settings) and sends the same workload each time: W waves of N concurrent chats
that share one long system prompt (a support assistant's policy, about 700 tokens) and
differ in the user's question, M generated tokens each (greedy, ignore_eos, streamed so
the time to first token is seen). One unmeasured request first puts the system prompt in
the cache, as a deployment's always-hot prompt would be.

    run  prefix caching  monitor
    1    off             on       (what saemon required before)
    2    on              off
    3    on              on
    4    on              off      (2 vs 4: this run's noise)

With the monitor on, the shipped safety pack (68 features) is projected on every token and
shipped to a real sidecar; the sidecar's counters show how
many prompt tokens were scored and how many were left unscored in each monitored run.
Prints TTFT and throughput per run, caching on/off with the monitor on, and the monitor's
on/off ratio with caching on beside the off/off noise.

    SAEMON_HOME=.cache/saemon python bench/prefix_cache.py [--requests 16] [--waves 2] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from monitor import model
from monitor.config import load_settings
from monitor.harness.sidecar import SidecarProcess
from monitor.harness.vllm_server import VllmServer

REPO = Path(__file__).resolve().parents[1]
SAFETY = REPO / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"
TOPICS = [
    "returns and refunds",
    "shipping times",
    "warranty claims",
    "account security",
    "payment methods",
    "order changes",
    "gift cards",
    "product recalls",
    "loyalty points",
    "privacy requests",
]
SYSTEM = "You are the customer support assistant of Northwind Outfitters, an outdoor gear shop.\n" + "".join(
    f"Policy {i + 1} ({topic}): answer questions about {topic} from the policy handbook only, "
    "be brief and polite, never promise what the handbook does not, never ask for a full card "
    "number or password, and hand the customer to a human agent when they are upset or the "
    "question is outside the handbook.\n"
    for i, topic in enumerate(TOPICS)
)
QUESTIONS = [
    f"Hello, I have a question about {topic}. {detail}"
    for detail in ("What should I do first?", "Can you explain the rules?")
    for topic in TOPICS
]


@dataclass
class Run:
    caching: bool
    monitored: bool
    seconds: float
    ttft: list[float]
    generated: int
    prompt_tokens: int
    scored_prompt: float | None = None
    unscored: float | None = None

    @property
    def rate(self) -> float:
        return self.generated / self.seconds

    def line(self) -> str:
        ttft = sorted(self.ttft)
        p95 = ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))]
        text = (
            f"caching {'on ' if self.caching else 'off'}  monitor {'on ' if self.monitored else 'off'}  "
            f"{self.rate:7.1f} tok/s  TTFT p50 {statistics.median(ttft) * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms"
        )
        if self.scored_prompt is not None:
            text += f"  prompt tokens scored {self.scored_prompt:.0f}, unscored {self.unscored:.0f}"
        return text


def workload(server: VllmServer, requests: int, waves: int, tokens: int) -> tuple[float, list[float], int, int]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=600, max_retries=0)

    def one(i: int) -> tuple[float, int, int]:
        started = time.perf_counter()
        first = None
        usage = None
        stream = client.chat.completions.create(
            model=server.served_name,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" (ticket {i})"},
            ],
            max_tokens=tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
            if chunk.usage is not None:
                usage = chunk.usage
        assert first is not None and usage is not None
        return first, usage.completion_tokens, usage.prompt_tokens

    one(10_000)  # warm-up: compiles the shapes and puts the system prompt in the cache
    ttft: list[float] = []
    generated = prompt = 0
    started = time.perf_counter()
    for wave in range(waves):
        with ThreadPoolExecutor(requests) as pool:
            for first, completion, prompt_tokens in pool.map(one, range(wave * requests, (wave + 1) * requests)):
                ttft.append(first)
                generated += completion
                prompt += prompt_tokens
    elapsed = time.perf_counter() - started
    assert generated == waves * requests * tokens, generated
    return elapsed, ttft, generated, prompt


def prompt_counters(sidecar: SidecarProcess, model_name: str) -> tuple[float, float]:
    """The sidecar's prompt tokens scored and tokens unscored (all reasons) so far."""
    values = sidecar.metrics()
    scored = values.get(
        ("saemon_tokens_scored_total", frozenset({"model_name": model_name, "scope": "prompt"}.items())), 0.0
    )
    unscored = sum(
        v
        for (metric, labels), v in values.items()
        if metric == "saemon_tokens_unscored_total" and ("model_name", model_name) in labels
    )
    return scored, unscored


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16, help="concurrent chats per wave")
    parser.add_argument("--waves", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per chat")
    args = parser.parse_args()
    model.apply_offline_environment()
    settings = load_settings()
    path = model.model_path(settings)
    name = settings.model.name
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        socket = f"unix://{work}/s.sock"
        sidecar = SidecarProcess(work / "sidecar", {"grpc_listen": socket, "probes_dir": str(SAFETY.parent)})
        plugin = {"pack": str(SAFETY), "sidecar": socket}
        runs: list[Run] = []
        with sidecar:
            for caching, monitored in ((False, True), (True, False), (True, True), (True, False)):
                extra = ["--enable-prefix-caching" if caching else "--no-enable-prefix-caching"]
                if monitored:
                    extra += ["--additional-config", json.dumps({"saemon": plugin})]

                before = prompt_counters(sidecar, name)
                server = VllmServer(path, name, settings.vllm, work / f"vllm-{len(runs)}.log", extra_args=extra)
                with server:
                    seconds, ttft, generated, prompt = workload(server, args.requests, args.waves, args.tokens)
                run = Run(caching, monitored, seconds, ttft, generated, prompt)
                if monitored:
                    sidecar.wait_idle()
                    after = prompt_counters(sidecar, name)
                    run.scored_prompt, run.unscored = after[0] - before[0], after[1] - before[1]
                runs.append(run)
                print(run.line(), flush=True)
    off_cache, plain, watched, plain_again = runs
    print(
        f"\nworkload: {args.waves} waves x {args.requests} concurrent chats sharing a "
        f"{off_cache.prompt_tokens // len(off_cache.ttft)}-token prompt (mostly the system prompt) "
        f"x {args.tokens} tokens, greedy, compiled, dtype {settings.vllm.dtype}"
    )
    print("with the monitor on, caching on/off:")
    print(f"  throughput {ratio(watched.rate, off_cache.rate)}x")
    print(f"  TTFT p50   {ratio(statistics.median(watched.ttft), statistics.median(off_cache.ttft))}x")
    print("with caching on, monitor on/off (off/off is the noise):")
    mean_rate = statistics.mean([plain.rate, plain_again.rate])
    mean_ttft = statistics.mean([statistics.median(plain.ttft), statistics.median(plain_again.ttft)])
    print(f"  throughput {ratio(watched.rate, mean_rate)}x   (off/off {ratio(plain_again.rate, plain.rate)})")
    print(
        f"  TTFT p50   {ratio(statistics.median(watched.ttft), mean_ttft)}x   "
        f"(off/off {ratio(statistics.median(plain_again.ttft), statistics.median(plain.ttft))})"
    )
    # The warm-up request is scored too; special tokens are not
    print(
        f"prompt tokens scored with caching on vs off: {watched.scored_prompt:.0f} vs {off_cache.scored_prompt:.0f}"
        f" (unscored: {watched.unscored:.0f} vs {off_cache.unscored:.0f})"
    )


if __name__ == "__main__":
    main()
