# Gyre — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PACKAGES := libs/contracts libs/common libs/ml libs/stack libs/cli $(wildcard services/*)
# Each test run gets its own temporary folder outside /tmp/pytest-of-<user>: pytest resets that
# folder's permissions at every session start, which would cut the embedded PostgreSQL (running as
# its own system user) off from its data while another session runs.
PYTEST_TMP = --basetemp="$$(mktemp -d -t gyre-pytest-XXXXXX)"
# The development workspace also installs optional extras, so their code is tested too.
EDITABLE := $(foreach p,$(filter-out libs/common libs/cli libs/stack services/serving services/monitor,$(PACKAGES)),-e $(p)) \
	-e 'libs/common[faust]' -e 'libs/cli[dlq]' -e 'libs/stack[demo]' -e 'services/serving[text]' -e 'services/monitor[text]'

.PHONY: help install up down logs status demo demo-text test test-unit test-integration test-e2e test-chaos generate docs lint typecheck check bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): constraints.txt requirements-dev.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@command -v $(PYTHON) >/dev/null || { echo "need Python 3.11+ as $(PYTHON)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Gyre needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -r requirements-dev.txt $(EDITABLE)
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the whole workspace (editable) with pinned versions

up: install ## Start broker, PostgreSQL and every service in the background; print the endpoints
	$(VENV)/bin/gyre-stack up

down: ## Stop exactly what `make up` started
	@test -x $(VENV)/bin/gyre-stack && $(VENV)/bin/gyre-stack down || echo "nothing to stop (no .venv)"

status: install ## Show what `make up` started and whether it is ready
	$(VENV)/bin/gyre-stack status

logs: install ## Show the logs of the stack started by `make up` (SERVICE=name for one)
	$(VENV)/bin/gyre-stack logs $(SERVICE)

demo: install ## Play the closed loop against the stack of `make up`, printing each step (docs/demo.md)
	$(VENV)/bin/gyre-stack demo

demo-text: install ## Play the text loop (torch fine-tuning, BYTES serving, corrections, text drift) against `make up`
	$(VENV)/bin/gyre-stack demo --text

test: install ## Set up and run every test tier (unit, integration, end-to-end)
	$(PY) -m pytest -q $(PYTEST_TMP)

test-unit: install ## Unit tests only (no I/O)
	$(PY) -m pytest -q $(PYTEST_TMP) tests/unit

test-integration: install ## Integration tests (real Tansu, real PostgreSQL, real servers)
	$(PY) -m pytest -q $(PYTEST_TMP) tests/integration

test-e2e: install ## End-to-end tests: the closed loop with every service as a real process
	$(PY) -m pytest -q $(PYTEST_TMP) tests/e2e

test-chaos: install ## Chaos tests: kill every service, pause the broker, stop PostgreSQL during the loop (docs/reliability.md)
	$(PY) -m pytest -q $(PYTEST_TMP) tests/chaos

generate: install ## Generate typed Python code from proto/ into libs/contracts
	$(PY) scripts/generate_contracts.py

docs: install ## Regenerate docs generated from code (docs/configuration.md from the settings classes)
	$(PY) scripts/generate_config_docs.py

lint: install ## Lint protos (buf), Python (ruff), the layering (import-linter, .importlinter); fail when generated code is stale
	$(PY) scripts/generate_contracts.py --check
	$(VENV)/bin/buf lint proto
	$(VENV)/bin/ruff check libs services tests bench scripts
	$(VENV)/bin/lint-imports

typecheck: install ## Type-check the code we own (mypy)
	$(VENV)/bin/mypy libs/common/src libs/ml/src libs/stack/src libs/cli/src $(wildcard services/*/src)

check: lint typecheck test-unit ## What to run before a commit: lint, type-check and the unit tier (no I/O)

bench: install ## Run the benchmarks in bench/ and print ratios against their peers
	$(PY) bench/run.py

clean: down ## Remove the virtual environment and local state
	rm -rf $(VENV) .gyre
