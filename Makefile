# PRM Studio — the two commands a fresh machine needs:
#   make up     set up everything, then serve the dashboard on the embedded default
#   make test   set up everything, then run the linter and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: up test system-deps-run system-deps-test bench

up: $(STAMP) system-deps-run
	$(BIN)/prm-studio up

# One torch thread per process: tests run several processes (workers, sandboxes, browser) on few
# cores, where two threads each make the tiny model several times slower, not faster.
test: $(STAMP) system-deps-test
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/pytest

bench: $(STAMP) system-deps-test
	$(BIN)/python -m bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

system-deps-run:
	@bash .ci/system-deps bubblewrap

system-deps-test:
	@bash .ci/system-deps bubblewrap chromium docker-compose
