# labelforge — everything a fresh machine needs, from one file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-reliability test-web test-all lint bench fuzz clean help

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

test-reliability: install  ## crash/restart/outage/load scenarios in tests/reliability (< 15 min); figures -> bench/results/reliability.json
	LABELFORGE_TEST_REDIS_DB_WORKER=$${LABELFORGE_TEST_REDIS_DB_WORKER:-5} LABELFORGE_TEST_REDIS_DB_SERVICE=$${LABELFORGE_TEST_REDIS_DB_SERVICE:-6} \
		$(BIN)/pytest tests/reliability -m "reliability or not reliability"

test-web: install  ## browser tests of the web console (headless Chromium; installs chromium, chromium-driver, selenium if missing); screenshots -> docs/console/
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }
	@$(BIN)/python -c "import selenium" 2>/dev/null || $(BIN)/pip install -q -e '.[test,web]'
	$(BIN)/pytest -m browser tests/web

test-all: install  ## every test, slow ones included
	$(BIN)/pytest -m "not gpu"

lint: install  ## ruff + mypy (models, service, worker: no errors)
	$(BIN)/ruff check models worker service bench tests
	$(BIN)/mypy models service worker --ignore-missing-imports

bench: install  ## quick benchmarks; results land in bench/results/
	$(BIN)/python bench/render.py --quick
	$(BIN)/python bench/generate.py --quick
	$(BIN)/python bench/predict.py --quick

fuzz: install  ## schemathesis over every endpoint of a served API, all phases (LABELFORGE_FUZZ_EXAMPLES per operation, default 50)
	$(BIN)/pytest tests/reliability/inputs/test_fuzz.py -m reliability

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache data runs
