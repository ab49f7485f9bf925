"""Shared fixtures. Real parts only: the provisioned default model, real vLLM processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor import model
from monitor.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


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
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SAEMON_* variables from the calling shell leak into a config test."""
    for name in list(os.environ):
        if name.startswith("SAEMON_"):
            monkeypatch.delenv(name)
    return monkeypatch
