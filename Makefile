# agentperf — one entry point for every task. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(BIN)/python)
export PATH := $(abspath $(BIN)):$(PATH)
# Hypothesis: a short profile in CI, a thorough one on demand (HYPOTHESIS_PROFILE=thorough).
export HYPOTHESIS_PROFILE ?= $(if $(CI),ci,dev)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'maturin>=1.9,<2'

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

.PHONY: install
install: $(BIN)/python ## build the extension (release) into .venv with the dev extras
	$(BIN)/maturin develop --release --extras dev -q

.PHONY: install-user
install-user: $(BIN)/python ## build and install the package alone, as `pip install .` does
	$(BIN)/python -m pip install -q .

.PHONY: report
report: install-user ## install, then run the performance report (the main job)
	$(BIN)/python -m agentperf report $(ARGS)

.PHONY: test-rust
test-rust: $(BIN)/python ## cargo test of the Rust core
	cargo test --all-targets -q

.PHONY: test-python
test-python: ## pytest of the package (run `make install` first)
	$(BIN)/python -m pytest -q

.PHONY: test
test: install test-rust test-python ## install, then run every test (cargo test + pytest)

.PHONY: stress
stress: install ## reliability sweep at full counts (AGENTPERF_STRESS=full, >= 1,000,000 operations)
	AGENTPERF_STRESS=full $(BIN)/python -m pytest tests -m stress -q -s -o log_cli=false --durations=0

.PHONY: bench
bench: install ## benchmarks: criterion for the core, pytest-benchmark against peers
	cargo bench --benches
	$(BIN)/python -m pytest benches -q --benchmark-only --benchmark-columns=median,ops,rounds --benchmark-sort=name

.PHONY: lint
lint: install ## formatting, clippy, ruff, mypy --strict, stubtest
	cargo fmt --check
	cargo clippy --all-targets -q -- -D warnings
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples
	$(BIN)/mypy --strict python/agentperf examples
	$(BIN)/python -m mypy.stubtest agentperf._agentperf

.PHONY: fmt
fmt: ## format Rust and Python sources
	cargo fmt
	$(BIN)/ruff format python tests benches examples

.PHONY: clean
clean: ## remove build products and the virtual environment
	cargo clean
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
