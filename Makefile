# `make demo` and `make test` work from a fresh clone: they create .venv when it
# is missing and install the project with its test extras first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make bench` also needs the `bench` extra (grpcio, for bench.websocket).
BENCH_STAMP := $(VENV)/.bench-installed

# tests/test_http_cache_nginx.py runs a real caching proxy: Debian's nginx
# (proxy_cache is in its core package; /usr/sbin is not on every user's PATH).
# Installed once when missing, with sudo unless root; found at once otherwise.
NGINX_FOUND = command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The browser client (clients/typescript): its dev dependencies come from the
# npm registry, pinned by package-lock.json.
TS       := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed

# The browser tests (tests/browser_support.py) drive Debian's chromium headless.
CHROMIUM_FOUND = command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium

.PHONY: demo demo-ipc demo-desktop demo-http demo-browser test lint typecheck pytest ts bench clean nginx chromium

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

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(TS_STAMP)

# The browser editor (examples/browser_editor): builds the client and the page's
# TypeScript module, then serves both with the backend; prints the URL.
# PORT=0 picks a free port.
PORT ?= 8000
demo-browser: $(STAMP) ts
	$(BIN)/python -m examples.browser_editor --build --port $(PORT)

# Builds the client (dist/, which the browser tests serve) and runs its unit tests.
ts: $(TS_STAMP)
	cd $(TS) && npm test

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

nginx:
	@$(NGINX_FOUND) || { \
	  echo "installing nginx for the proxy_cache test (apt-get)"; \
	  $(SUDO) apt-get install -y -qq --no-install-recommends nginx >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && \
	    $(SUDO) apt-get install -y -qq --no-install-recommends nginx >/dev/null; }; }
	@$(NGINX_FOUND) || { echo "nginx is still missing: install Debian's nginx" >&2; exit 1; }

chromium:
	@$(CHROMIUM_FOUND) || { \
	  echo "installing chromium for the browser tests (apt-get)"; \
	  $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && \
	    $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; }
	@$(CHROMIUM_FOUND) || { echo "chromium is still missing: install Debian's chromium" >&2; exit 1; }

# The nginx and browser tests fail, rather than skip, when nginx or chromium is
# missing here. The browser tests load the client from dist/ (`make ts`).
pytest: $(STAMP) nginx chromium ts
	$(BIN)/coverage erase
	TETHER_REQUIRE_NGINX=1 TETHER_REQUIRE_CHROMIUM=1 $(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='src/tether/runtime/*,src/tether/contexts/*' --fail-under=90
	$(BIN)/coverage report

test: lint typecheck ts pytest

bench: $(BENCH_STAMP) ts chromium
	$(BIN)/python -m bench.inprocess
	$(BIN)/python -m bench.ipc
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.websocket
	$(BIN)/python -m bench.local
	$(BIN)/python -m bench.ipc_vs_rpc
	$(BIN)/python -m bench.sessions
	$(BIN)/python -m bench.binary
	$(BIN)/python -m bench.streams
	$(BIN)/python -m bench.browser

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage
	rm -rf $(TS)/node_modules $(TS)/dist $(TS)/dist-test examples/browser_editor/build
