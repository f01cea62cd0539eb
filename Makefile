# One entry point per job; CI calls `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/gateway.yaml
PORT ?= 8000
MOCK_PORT ?= 8099

.PHONY: setup run test lint bench bench-peers nats-server clean

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

test: setup nats-server
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway exporter
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

bench: setup
	$(BIN)/python -m bench.overhead

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
