# Nextesy: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
# Every target sets up what it needs itself; `make help` lists them.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Stamp files: reinstall only when the project definition or the Rust sources change.
STAMP       := $(VENV)/.installed
TEST_STAMP  := $(VENV)/.installed-test
RUST_SRC    := $(shell find rust_ext/src -name '*.rs' 2>/dev/null) rust_ext/Cargo.toml $(wildcard rust_ext/Cargo.lock)

.PHONY: help demo sync ui test lint fuzz-rust check-toolchain clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

check-toolchain:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+" >&2; exit 1; }
	@command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup) to build rust_ext" >&2; exit 1; }

$(BIN)/python: | check-toolchain
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(RUST_SRC) | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(TEST_STAMP): pyproject.toml $(RUST_SRC) | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@ $(STAMP)

demo: $(STAMP)  ## Install, write sample landing files and sync them (embedded default, no cloud)
	$(BIN)/nextesy demo
	$(BIN)/nextesy sync
	@echo
	@echo "Lineage, runs and checks in the Dagster UI:  $(BIN)/nextesy ui   (then open http://127.0.0.1:3000)"
	@echo "Tables at a glance:                          $(BIN)/nextesy status"

sync: $(STAMP)  ## Ingest new landing files and update the replica
	$(BIN)/nextesy sync

ui: $(STAMP)  ## Open the Dagster UI on the instance the CLI records runs in
	$(BIN)/nextesy ui

lint: $(TEST_STAMP)  ## Formatting and lints, Rust and Python
	cd rust_ext && cargo fmt --check && cargo clippy --quiet -- -D warnings
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: lint  ## Install with test extras, lint, then run the Rust and Python tests and short fuzz runs (atheris, cargo-fuzz)
	cd rust_ext && cargo test --quiet
	$(BIN)/pytest
	$(BIN)/python fuzz/fuzz_parsers.py -max_total_time=30 -print_final_stats=1
	$(MAKE) fuzz-rust

FUZZ_SECONDS ?= 30
# cargo-fuzz builds with sanitizer flags that only a nightly compiler takes; RUSTC_BOOTSTRAP lets the one
# stable toolchain take them. The first build (the crate and arrow-rs under AddressSanitizer) takes minutes.
fuzz-rust:  ## Coverage-guided fuzzing of the Rust JSONL, gzip and CSV readers (cargo-fuzz, ASan), FUZZ_SECONDS long
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
	mkdir -p rust_ext/fuzz/corpus
	cd rust_ext && RUSTC_BOOTSTRAP=1 cargo fuzz run parsers fuzz/corpus fuzz/seeds -- \
		-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

clean:  ## Remove the virtualenv, build output and the embedded default's data
	rm -rf $(VENV) rust_ext/target .nextesy .pytest_cache .ruff_cache
