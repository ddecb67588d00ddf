# The two commands a new user needs (see README):  `make run`  and  `make test`.
# Both set up first (the Debian dataset package, Python 3.11's venv module, a pinned virtualenv); `make test`
# (and `make check`) also install what only the tests need (Chromium for one browser test).

SHELL := /bin/bash
VENV ?= .venv
# A name, resolved when a recipe runs: scripts/install-system-deps.sh installs python3.11 where it is missing.
PYTHON ?= python3.11
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`: put the venv first on PATH for dvc and friends.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup run test check test-deps gate bench flow results clean clean-venv

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
	PYTHON=$(PYTHON) scripts/install-system-deps.sh
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

# The GPU venv: exactly requirements-gpu.lock (tensorflow + its nvidia-* CUDA wheels instead of tensorflow-cpu,
# every other version the same), then this package without its declared deps (they name tensorflow-cpu).
# tensorflow-cpu goes first: both wheels install the same `tensorflow` package directory.
$(VENV)/.installed-gpu: pyproject.toml requirements-gpu.lock scripts/install-system-deps.sh
	PYTHON=$(PYTHON) scripts/install-system-deps.sh
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

## test: the whole test suite (small real-data slices, tiny epoch counts); what CI runs.
test: setup test-deps
	python -m pytest -q -n 2 --durations=15

## check: the fast tier: every module's logic and every stage's bad-input handling, no end-to-end runs.
check: setup test-deps
	python -m pytest -q -n 2 -m "not slow"

# What only the tests need (Chromium for the serve page's screenshot test); `make run` never installs it.
test-deps:
	PYTHON=$(PYTHON) scripts/install-system-deps.sh --test

## gate: the data-quality gate alone (fetch, ingest, validate on the full data), as CI runs it.
gate: setup
	dvc repro validate

## flow: the same pipeline through Prefect (ephemeral mode; no server needed).
flow: setup
	python -m flows run

## bench: side-by-side benchmarks (writes benchmarks/out/benchmarks.{md,json}); never part of the tests.
## BENCH="--end-to-end --sections 6,1,2,3,4,5,7 --out docs/results" on a fresh clone rebuilds the committed copy.
bench: setup
	python -m benchmarks $(BENCH)

## results: rebuild docs/results (report, figures, model cards, input snapshot) from this workspace's last run.
results: setup
	python -m scripts.results update

## clean: remove the pipeline's outputs and the workspace's DVC cache (the venv stays: `make clean-venv`).
clean:
	rm -rf data/raw data/interim data/validation data/processed data/split data/images data/download \
	  models metrics reports plots exports accuracy.json dvc_plots .checkpoints .prefect-state .pipeline.lock \
	  .dvc/cache .dvc/tmp benchmarks/out

## readme-dag: regenerate the DAG in README.md from `dvc dag --md` (tests/test_readme.py checks it is current).
.PHONY: readme-dag
readme-dag:
	scripts/update-readme-dag.sh
