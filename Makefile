# The two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export ETL_DATA_DIR ?= $(CURDIR)/data

.PHONY: run test dev stand-in java clean

# Fails at once, with the package to install, when Java 17+ is missing.
java:
	@$(PYTHON) -m etl_assets.preflight

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

run: java $(VENV)/.installed
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/etl-daily-run

test: java $(VENV)/.installed
	$(BIN)/python -m pytest

# The Dagster UI with the bundled stand-in API served by the run itself.
dev: java $(VENV)/.installed
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

stand-in: $(VENV)/.installed
	$(BIN)/etl-stand-in-api --port 8000

clean:
	rm -rf $(VENV) data .dagster_home .pytest_cache
