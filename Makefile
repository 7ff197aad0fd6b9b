# `make demo` and `make test` work from a fresh clone: they create .venv when it
# is missing and install the project with its test extras first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make bench` also needs the `bench` extra (grpcio, for bench.websocket).
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo demo-ipc demo-desktop demo-http test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.robot_world

demo-ipc: $(STAMP)
	$(BIN)/python -m examples.ipc_editor

demo-desktop: $(STAMP)
	$(BIN)/python -m examples.desktop_editor

demo-http: $(STAMP)
	$(BIN)/python -m examples.http_backends

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='src/tether/runtime/*,src/tether/contexts/*' --fail-under=90
	$(BIN)/coverage report

test: lint typecheck pytest

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.inprocess
	$(BIN)/python -m bench.ipc
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.websocket
	$(BIN)/python -m bench.local
	$(BIN)/python -m bench.ipc_vs_rpc
	$(BIN)/python -m bench.sessions
	$(BIN)/python -m bench.binary
	$(BIN)/python -m bench.streams

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage
