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

# Build logs go to files; a step that fails prints its log. $(call quiet,LOG,COMMAND...)
quiet = $(2) > $(1) 2>&1 || { cat $(1); echo "failed (log: $(1)): $(2)"; exit 1; }

$(BIN)/python:
	@echo "creating $(VENV) and installing maturin into it"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -q --upgrade pip 'maturin>=1.9,<2'

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

.PHONY: install
install: $(BIN)/python ## build the extension (release) into .venv with the dev extras
	@echo "building agentperf-rs (Rust, release; minutes the first time) into $(VENV)" \
	  "with the dev extras; log: $(VENV)/install.log"
	@# An older checkout installed this tree as "agentperf" (a name taken on PyPI): drop it.
	@$(BIN)/python -m pip uninstall -q -q -y agentperf > /dev/null 2>&1 || true
	@$(call quiet,$(VENV)/install.log,$(BIN)/maturin develop --release --extras dev)

.PHONY: install-user
install-user: $(BIN)/python ## build and install the package alone, as `pip install .` does
	$(BIN)/python -m pip install -q -q .

.PHONY: report
report: $(BIN)/python ## install with the peers it is compared with (bench extra), run the report
	@echo "building agentperf-rs (Rust, release; minutes the first time) and the peers it is" \
	  "compared with (extra bench) into $(VENV); log: $(VENV)/report-install.log"
	@$(BIN)/python -m pip uninstall -q -q -y agentperf > /dev/null 2>&1 || true
	@$(call quiet,$(VENV)/report-install.log,$(BIN)/python -m pip install '.[bench]')
	$(BIN)/python -m agentperf report $(ARGS)

.PHONY: test-rust
test-rust: $(BIN)/python ## cargo test of the Rust core (unit and property tests, not the benches)
	@echo "cargo test of the Rust core (compiling takes a minute or two the first time)"
	@cargo test --lib --tests -q
	@echo "cargo test of the cores without the python feature (no PyO3, no interpreter)"
	@cargo test --no-default-features --lib -q

.PHONY: test-python
test-python: ## pytest of the package (run `make install` first)
	@echo "pytest"
	@$(BIN)/python -m pytest -q

.PHONY: services
services: ## install the servers the tests start themselves (Debian's redis-server) when missing
	@bash .ci/services.sh

.PHONY: test
test: install services test-rust test-python ## install, then run every test (cargo test + pytest)

.PHONY: wheel-check
wheel-check: $(BIN)/python ## build the abi3 wheel, install it in a fresh venv, run the examples on it
	rm -rf dist .wheel-venv
	$(BIN)/maturin build --release -q --out dist
	ls dist/agentperf_rs-*-abi3-*.whl
	$(PYTHON) -m venv .wheel-venv
	@# The [ray] and [prometheus] extras too: examples/ray_batch.py and
	@# examples/metrics_prometheus.py run on them.
	env -u VIRTUAL_ENV .wheel-venv/bin/python -m pip install -q -q "$$(ls dist/agentperf_rs-*-abi3-*.whl)[ray,prometheus]"
	cd /tmp && env -u VIRTUAL_ENV $(abspath .wheel-venv)/bin/python -c \
	  "import agentperf, sys; assert '.wheel-venv' in agentperf.__file__, agentperf.__file__"
	cd /tmp && for e in $(abspath examples)/*.py; do \
	  echo "example $$(basename $$e)"; \
	  env -u VIRTUAL_ENV $(abspath .wheel-venv)/bin/python $$e > /dev/null || exit 1; done

.PHONY: loom
loom: $(BIN)/python ## model-check the semaphore and pool cores with loom (preemption bound 4; LOOM_MAX_PREEMPTIONS=5 explores more)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom -- --nocapture --test-threads=2

.PHONY: proptest
proptest: $(BIN)/python ## property tests of the key writer and cache core, more cases (PROPTEST_CASES=10000)
	PROPTEST_CASES=$${PROPTEST_CASES:-10000} cargo test --release --lib proptests

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
	cargo clippy --no-default-features --lib --tests -q -- -D warnings
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples
	$(BIN)/mypy --strict python/agentperf examples tests/typecheck_sample.py
	$(BIN)/python -m mypy.stubtest agentperf._agentperf

.PHONY: fmt
fmt: ## format Rust and Python sources
	cargo fmt
	$(BIN)/ruff format python tests benches examples

.PHONY: clean
clean: ## remove build products and the virtual environment
	cargo clean
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
