# The two commands of the README: `make demo` and `make test`. Both set up first
# (scripts/setup.sh is idempotent and takes seconds when everything is there).
SHELL := /bin/bash
# Keep what setup makes inside the checkout's ignored folders unless told otherwise.
export SAEMON_HOME ?= $(CURDIR)/.cache/saemon
export VLLM_CACHE_ROOT ?= $(CURDIR)/.cache/vllm

.PHONY: setup demo test
setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/saemon demo

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)
