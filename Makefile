# The two commands of the README: `make demo` and `make test`. Both set up first
# (scripts/setup.sh is idempotent and takes seconds when everything is there).
SHELL := /bin/bash
# Keep what setup makes inside the checkout's ignored folders unless told otherwise.
export SAEMON_HOME ?= $(CURDIR)/.cache/saemon
export VLLM_CACHE_ROOT ?= $(CURDIR)/.cache/vllm

.PHONY: setup demo test lint format
setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/saemon demo

test: lint
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# The lint and type gate, run by `make test` before the suite (so CI runs it too):
# formatting, ruff's rules, mypy on monitor/, and the import floors (import-linter).
# All configured in pyproject.toml.
lint: setup
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache

# Apply the formatter and ruff's safe fixes.
format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
