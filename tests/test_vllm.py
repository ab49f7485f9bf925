"""The default model served by real vLLM (CPU build): offline engine and OpenAI server."""

import json
import os
import urllib.request

import pytest

from monitor import model
from monitor.harness.vllm_server import VllmServer, group_members

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(settings, default_model):
    """A compiled (default mode) vLLM OpenAI server on a free loopback port."""
    srv = VllmServer(default_model, settings.model.name, settings.vllm, settings.logs_dir / "test-vllm-server.log")
    with srv:
        yield srv


def test_server_answers_the_capital_of_france(server):
    answer = server.chat(model.CHECK_QUESTION, max_tokens=32, request_id="test-paris")
    assert "Paris" in answer


def test_server_lists_the_served_model_name(server, settings):
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=10) as response:
        listed = [m["id"] for m in json.load(response)["data"]]
    assert listed == [settings.model.name]


def test_server_runs_compiled_and_on_loopback(server):
    log = server.log_path.read_text()
    assert "enforce_eager=False" in log
    assert f"Starting vLLM server on http://127.0.0.1:{server.port}" in log


def test_stop_ends_every_process_of_the_server(settings, default_model):
    srv = VllmServer(
        default_model,
        settings.model.name,
        settings.vllm.model_copy(update={"enforce_eager": True}),
        settings.logs_dir / "test-vllm-stop.log",
    )
    srv.start()
    pgid = srv.pid
    srv.stop()
    srv.stop()  # idempotent
    assert group_members(pgid) == []  # no live process of the group is left
    assert os.getpid() in group_members(os.getpgid(0))  # the probe does see live processes


def test_offline_llm_answers_the_capital_of_france(default_model):
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(default_model), dtype="float32", max_model_len=1024, enforce_eager=True)
    try:
        outputs = llm.chat(
            [{"role": "user", "content": model.CHECK_QUESTION}],
            SamplingParams(temperature=0, max_tokens=24),
        )
        assert "Paris" in outputs[0].outputs[0].text
    finally:
        llm.llm_engine.engine_core.shutdown()
