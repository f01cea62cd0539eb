# One entry point per job; CI calls `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/gateway.yaml
PORT ?= 8000
MOCK_PORT ?= 8099

.PHONY: setup run test lint bench bench-peers bench-store bench-tools bench-exporter nats-server chromium claude-code clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# nats-server comes from Debian's packages when it is missing (tests need a real broker).
nats-server:
	@command -v nats-server >/dev/null 2>&1 || { \
	  echo "installing nats-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nats-server; }

run: setup
	@bash scripts/run.sh "$(CONFIG)" "$(PORT)" "$(MOCK_PORT)"

# Claude Code (a real Messages API client for tests/integration/test_claude_code.py), from the
# npm registry into a project-local folder, when node and npm are present.
CLAUDE_CODE_VERSION ?= 2.1.197
claude-code:
	@if command -v npm >/dev/null 2>&1; then \
	  test -x .tools/claude-code/node_modules/.bin/claude || \
	  npm install --silent --no-audit --no-fund --prefix .tools/claude-code \
	    @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION); \
	else echo "npm not found: the Claude Code test will be skipped"; fi

# The UI tests drive Debian's chromium through chromedriver (selenium).
chromium:
	@command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium and chromium-driver from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; }

test: setup nats-server chromium claude-code
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway exporter
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

# wrk (closed-loop maximum throughput) and nats-server come from Debian's packages when missing.
bench-tools: nats-server
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

# Overhead run (~8 min; BENCH_ARGS="--quick" for ~2.5 min); results under bench/results/.
bench: setup bench-tools
	$(BIN)/python -m bench.overhead $(BENCH_ARGS)

# Same run with LiteLLM's proxy beside the gateway (installs it into bench/.peers/ once).
bench-peers: setup bench-tools
	$(BIN)/python -m bench.peers $(BENCH_ARGS)

# Trace store: ingest, list, detail and stats figures for DuckDB and chDB (STORE_ARGS="--n 100000").
bench-store: setup
	$(BIN)/python -m bench.store $(STORE_ARGS)

# Exporter throughput (spans/s per core, OTLP protobuf and JSON) and the stream relay micro-bench.
bench-exporter: setup
	$(BIN)/python -m bench.exporter_throughput
	$(BIN)/python -m bench.micro_relay

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
