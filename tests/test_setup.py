"""scripts/setup.sh on a ready checkout: nothing is reinstalled."""

import subprocess

import pytest
from conftest import REPO


@pytest.mark.slow
def test_setup_on_a_ready_checkout_reinstalls_nothing(default_model):
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "python environment up to date" in result.stderr
    assert "installing" not in result.stderr
    assert result.stdout.strip() == str(default_model)
