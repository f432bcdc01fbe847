# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup test-tools run lint test test-fast dev benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	mkdir -p $(DAGSTER_HOME) && cp -u dagster.yaml $(DAGSTER_HOME)/dagster.yaml

run: setup  ## run daily_etl once on the embedded defaults (or whatever the environment configures)
	$(BIN)/dagster job execute -m etl_assets -j daily_etl

dev: setup  ## the Dagster UI on http://127.0.0.1:3000 with the daemon (schedule, sensors)
	$(BIN)/dagster dev -m etl_assets

# System tools some tests drive (Debian packages, so root or sudo): Chromium for the UI test,
# docker-compose for the compose-file check, zip for a really encrypted archive.
test-tools:
	bash scripts/install_browser.sh
	command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
	command -v zip >/dev/null || { apt-get update -qq && apt-get install -y -qq zip >/dev/null; }

# Style and types: ruff's lint and format check on everything, mypy on the package.
lint: setup
	$(BIN)/ruff check etl_assets etl_assets_tests benchmarks scripts
	$(BIN)/ruff format --check etl_assets etl_assets_tests benchmarks scripts
	$(BIN)/mypy etl_assets

test: setup test-tools lint
	$(BIN)/pytest

# The pure and per-asset tests (marked `fast`): no MariaDB, server or browser, seconds not minutes.
test-fast: setup
	$(BIN)/pytest -m fast -q

benchmark: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf .etl .dagster_home
