# Each target makes its own virtual environment (.venv) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# llama.cpp for any x86-64 with AVX2, not just this CPU: a native build can use instructions (AMX) that a
# sandbox or another machine refuses, and the wheel is cached and reused by later installs.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: run test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 here is the small CPU build this machine carries; an unpinned torch pulls CUDA's.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,fish,lint]'
	touch $@

## The main job: `fishvoice serve` with the embedded models (RunPod's job API on HOST:PORT).
run: $(VENV)/.installed
	@echo "fishvoice: loading models, then serving http://$(HOST):$(PORT). Call it with"
	@echo "  $(VENV)/bin/fishvoice client --url http://$(HOST):$(PORT) --message 'Hello!' --output-dir reply"
	@echo "  curl -s -X POST http://$(HOST):$(PORT)/runsync -H 'Content-Type: application/json' -d '{\"input\": {\"message\": \"Hello!\", \"audio_format\": \"wav\"}}'"
	$(VENV)/bin/fishvoice serve --host $(HOST) --port $(PORT)

## All tests, on the real embedded models.
test: $(VENV)/.installed
	$(PY) -m pytest -q

## What loads no model (parsing, protocols, state machines, stores, layout): under a minute.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not model"

## ruff (lint and format) and mypy (strict), as CI runs them.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/pipeline.py
	$(PY) bench/realtime.py
	$(PY) bench/server.py
	$(PY) bench/fish.py

clean:
	rm -rf $(VENV) .pytest_cache
