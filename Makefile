# Two commands on a fresh machine (README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-all lint setup system bench

demo: setup
	$(BIN)/flywheel demo

test: setup lint
	$(BIN)/python -m pytest -q

# ruff (default rules + import order) and the import-linter contract of pyproject.toml (layers;
# only the engine adapter imports Ray; only the flows import Prefect).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test-all: setup
	$(BIN)/python -m pytest -q -m ""

setup: $(STAMP)

system:
	bash deploy/install-system.sh

$(STAMP): pyproject.toml deploy/install-system.sh
	bash deploy/install-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)
