# Each target makes its own virtual environment (.venv) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

## The main job: the RunPod worker with the embedded models, serving RunPod's local test API.
run: $(VENV)/.installed
	@echo "fishvoice on http://$(HOST):$(PORT)  (try: curl -s -X POST http://$(HOST):$(PORT)/runsync -H 'Content-Type: application/json' -d '{\"input\":{\"message\":\"Hello!\",\"audio_format\":\"wav\"}}')"
	$(PY) handler.py --rp_serve_api --rp_api_host $(HOST) --rp_api_port $(PORT)

## All tests, on the real embedded models.
test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache
