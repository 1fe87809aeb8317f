# One task runner. `make dev` and `make test` each install what they need first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := requirements-dev.lock

.DEFAULT_GOAL := help
.PHONY: help install dev test test-all lint format typecheck lock clean bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

# Reinstall only when the lock or the project metadata changes.
$(STAMP): $(LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

install: $(STAMP)  ## create .venv and install the locked dependencies

dev: $(STAMP)  ## run the whole stack on embedded defaults (Ctrl-C stops it)
	$(BIN)/sagas dev --module workflows --module examples

test: $(STAMP)  ## run the test suite (slow suites excluded)
	$(BIN)/pytest -m "not slow"

test-all: $(STAMP)  ## run every suite, slow ones included
	$(BIN)/pytest

bench: $(STAMP)  ## benchmarks (not tests): API vs client, tracing on/off, engine vs hand-written
	$(PY) -m bench.api_start --sagas 150 --concurrency 20 --rounds 6
	$(PY) -m bench.tracing --sagas 150 --concurrency 20 --rounds 4
	$(PY) -m bench.baseline --sagas 150 --concurrency 20 --rounds 3
	$(PY) -m bench.memory --sagas 1000

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)  ## mypy (strict on engine/)
	$(BIN)/mypy

lock:  ## re-resolve requirements-dev.lock from pyproject.toml (needs uv)
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --no-header -o $(LOCK)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .sagas
