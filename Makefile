# One task runner. `make dev` and `make test` each install what they need first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := requirements-dev.lock
# What the image installs (deploy/Dockerfile): the dependencies without the dev tools and without
# the embedded Temporal server (the `embedded` extra).
RUNTIME_LOCK := requirements.lock
UV      ?= uv

.DEFAULT_GOAL := help
.PHONY: help install dev test test-all chaos lint format typecheck lock clean bench browser

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	@python3 -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make: python3 -m venv failed; on Debian or Ubuntu: sudo apt install python3-venv"; exit 1; }

# Reinstall only when the lock or the project metadata changes. The lock holds the build backend
# too (setuptools, hash-checked), so the project is built without fetching anything else.
$(STAMP): $(LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

install: $(STAMP)  ## create .venv and install the locked dependencies

dev: $(STAMP)  ## run the whole stack on embedded defaults (Ctrl-C stops it)
	$(BIN)/sagas dev --module workflows --module examples

# The console's browser tests (tests/test_console.py) drive Debian's Chromium through
# Playwright, which must not download a browser of its own. As root with apt, install it;
# otherwise say how (the tests then skip, naming this target).
CHROMIUM ?= /usr/bin/chromium
browser:  ## install Chromium for the console's browser tests (Debian: apt-get install chromium)
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make: installing chromium for the browser tests (apt-get install -y chromium)"; \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } || \
	  echo "make: apt-get could not install chromium; the browser tests will be skipped"; \
	else \
	  echo "make: $(CHROMIUM) is missing; the browser tests will be skipped."; \
	  echo "      Install it with: sudo apt-get install -y chromium (Debian/Ubuntu)"; \
	fi

test: $(STAMP) browser  ## run the test suite (slow suites excluded)
	$(BIN)/pytest -m "not slow"

test-all: $(STAMP) browser  ## run every suite, slow ones included
	$(BIN)/pytest

bench: $(STAMP)  ## benchmarks (not tests; docs/benchmarks.md): engine vs hand-written, capacity, waits, ...
	$(PY) -m bench.api_start --sagas 150 --concurrency 20 --rounds 6
	$(PY) -m bench.tracing --sagas 150 --concurrency 20 --rounds 4
	$(PY) -m bench.baseline --modes handwritten,engine --alternate --failures --sagas 200 --rounds 12
	$(PY) -m bench.baseline --modes handwritten,engine-local,handwritten-local --alternate --failures --sagas 200 --rounds 12
	$(PY) -m bench.capacity --rates 5,10,15,20,25,30,35,40 --seconds 20
	$(PY) -m bench.api_wait --waiters 50 --seconds 5
	$(PY) -m bench.memory --sagas 1000

chaos: $(STAMP)  ## the chaos suites make test leaves out (kills, faults, outages; docs/reliability.md)
	$(BIN)/pytest -m "chaos and slow" -s

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)  ## mypy (strict on engine/)
	$(BIN)/mypy

# Both locks from pyproject.toml, each with the build backend ([build-system] requires) and its
# hashes; the runtime lock takes the dev lock's versions. Versions already locked are kept:
# `make lock LOCK_ARGS=--upgrade` moves them to the newest allowed.
LOCK_FLAGS     := --quiet --generate-hashes --python-version 3.11 --no-header $(LOCK_ARGS)
BUILD_REQUIRES := python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

lock:  ## re-resolve requirements-dev.lock and requirements.lock (needs uv: pip install uv)
	@command -v $(UV) >/dev/null || { echo "make lock needs uv: pip install uv (or pipx install uv)"; exit 1; }
	$(BUILD_REQUIRES) | $(UV) pip compile pyproject.toml - --extra dev $(LOCK_FLAGS) -o $(LOCK)
	$(BUILD_REQUIRES) | $(UV) pip compile pyproject.toml - --constraint $(LOCK) $(LOCK_FLAGS) -o $(RUNTIME_LOCK)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .sagas
