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

# GPU=1: TensorFlow's CUDA build from requirements-gpu.lock; GPU=0: tensorflow-cpu from requirements.lock.
# Default (GPU unset, or set to anything but 0/1): 1 when `nvidia-smi -L` lists at least one GPU, else 0.
ifeq ($(filter 0 1,$(GPU)),)
override GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU [0-9]' && echo 1 || echo 0)
endif
ifeq ($(GPU),1)
SETUP_STAMP := $(VENV)/.installed-gpu
else
SETUP_STAMP := $(VENV)/.installed
endif

setup: $(SETUP_STAMP)

$(VENV)/.installed: pyproject.toml requirements.lock scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

# The GPU venv: exactly requirements-gpu.lock (tensorflow + its nvidia-* CUDA wheels instead of tensorflow-cpu,
# every other version the same), then this package without its declared deps (they name tensorflow-cpu).
# tensorflow-cpu goes first: both wheels install the same `tensorflow` package directory.
$(VENV)/.installed-gpu: pyproject.toml requirements-gpu.lock scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes tensorflow-cpu
	$(BIN)/python -m pip install --quiet -r requirements-gpu.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed
	touch $@

## clean-venv: remove the virtualenv (e.g. to go back from the GPU build to tensorflow-cpu); `make setup` rebuilds it.
clean-venv:
	rm -rf $(VENV)

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

## readme-dag: regenerate the DAG in README.md from `dvc dag --md` (tests/test_readme.py checks it is current).
.PHONY: readme-dag
readme-dag:
	scripts/update-readme-dag.sh
