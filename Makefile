# labelforge — everything a fresh machine needs, from one file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-all lint bench fuzz clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install labelforge with test tools (quick when nothing changed)

run: install  ## start the embedded service (API + worker, local storage, SQLite, shipped bundles)
	$(BIN)/labelforge serve

test: install  ## the default test suite (< 15 min on 2 cores; no slow/gpu/reliability tests)
	$(BIN)/pytest

test-all: install  ## every test, slow ones included
	$(BIN)/pytest -m "not gpu"

lint: install  ## ruff + mypy on service/ and worker/
	$(BIN)/ruff check models worker service bench tests
	$(BIN)/mypy service worker --ignore-missing-imports

bench: install  ## quick benchmarks; results land in bench/results/
	$(BIN)/python bench/render.py --quick
	$(BIN)/python bench/generate.py --quick
	$(BIN)/python bench/predict.py --quick

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache data runs
