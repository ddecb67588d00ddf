# The two commands a new user needs (see README):  `make run`  and  `make test`.
# Both set up everything first (Debian dataset package + a pinned virtualenv), then do their job.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`: put the venv first on PATH for dvc and friends.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup run test gate bench flow clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

## run: the main job: the whole DAG (fetch -> ... -> publish) with DVC; cached stages are skipped.
run: setup
	dvc repro

## test: the test suite (small real-data slices, tiny epoch counts).
test: setup
	python -m pytest -q

## gate: the data-quality gate alone (fetch, ingest, validate on the full data), as CI runs it.
gate: setup
	dvc repro validate

## flow: the same pipeline through Prefect (ephemeral mode; no server needed).
flow: setup
	python -m flows run

## bench: side-by-side benchmarks (writes reports/benchmarks.md); never part of the tests.
bench: setup
	python -m benchmarks
