"""The README's main-job command: `saemon demo` on the embedded default."""

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_demo_serves_the_default_model_and_prints_its_answer(default_model):
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--eager"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "assistant: The capital of France is Paris." in result.stdout
    assert "saemon demo: OK" in result.stdout
