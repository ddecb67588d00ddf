"""Prefect orchestration of the DVC pipeline: one task per dvc.yaml stage, a dataset watcher, deployments.

Not a second DAG: the stage list and its order are read from dvc.yaml (through DVC) on every run, and
every stage runs through `dvc repro --single-item`, so DVC stays the cache and the source of truth.
Entry point: `python -m flows run|watch|serve` (see docs/orchestration.md).
"""

import os

# Must happen before anything imports prefect: this machine is offline (no telemetry), and the
# ephemeral API server needs ~10 s to start on 2 cores (Prefect's default limit, 20 s, is too tight).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASET_CHANGED_EVENT = "fmnist.dataset.changed"
STATE_DIR = ".prefect-state"
