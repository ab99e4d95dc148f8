# dancu — the one task runner. `make up` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
ARGS ?=
PYTEST_ARGS ?=
SRC := dancu api streams tracing registry gate infra tests bench

.PHONY: help setup services tools up test test-unit chaos lint bench stop status clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "error: a JDK (java) is required for Kafka"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: Maven (mvn) is required to fetch Kafka"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP) ## Create the virtualenv and install dancu with its dev tools

services: setup ## Obtain and start Kafka (Maven jars) and Redis (Debian package)
	$(BIN)/dancu services start

tools: ## Debian tools the suite uses (docker-compose v1 validates the compose file offline; chromium runs the dashboard's browser test)
	@command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

up: setup ## Run the platform with simulated traffic (ARGS="--duration 60" to stop after 60 s)
	$(BIN)/dancu up $(ARGS)

test: services tools ## Set up everything and run the whole test suite
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup ## Unit and functional tests only (no services)
	$(BIN)/pytest -q tests/unit tests/functional

CHAOS_REPORT := .dancu/chaos-report.jsonl

chaos: services tools ## Fault tests (kill, partition, wipe services on purpose); prints the chaos table
	@mkdir -p $(dir $(CHAOS_REPORT)) && : > $(CHAOS_REPORT)
	DANCU_CHAOS_REPORT=$(CHAOS_REPORT) $(BIN)/pytest -q -p no:cacheprovider tests/chaos $(PYTEST_ARGS); \
	  status=$$?; DANCU_CHAOS_REPORT=$(CHAOS_REPORT) $(BIN)/python -m tests.chaos.report; exit $$status

lint: setup ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)
	$(BIN)/mypy

bench: services ## Benchmarks: each prints its figure and its ratio to a raw baseline
	PYTHONPATH=. $(BIN)/python bench/ingest.py $(ARGS)
	PYTHONPATH=. $(BIN)/python bench/imports.py
	PYTHONPATH=. $(BIN)/python bench/gate_checks.py
	PYTHONPATH=. $(BIN)/python bench/qr.py
	PYTHONPATH=. $(BIN)/python bench/tracing.py
	PYTHONPATH=. $(BIN)/python bench/dashboard.py

status: setup ## Show the embedded services
	$(BIN)/dancu services status

stop: setup ## Stop the embedded services
	$(BIN)/dancu services stop

clean: ## Stop services and remove data, logs and the virtualenv
	-$(BIN)/dancu services stop
	rm -rf .dancu $(VENV)
