"""Prefect orchestration of the DVC pipeline: one task per dvc.yaml stage, a dataset watcher, deployments.

Not a second DAG: the stage list and its order are read from dvc.yaml (through DVC) on every run, and
every stage runs through `dvc repro --single-item`, so DVC stays the cache and the source of truth.
Entry point: `python -m flows run|watch|serve` (see docs/orchestration.md).
"""

import os

# Must happen before anything imports prefect: this machine may be offline (no telemetry), and the ephemeral API
# server can take longer to start on a small machine than Prefect's default limit allows.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASET_CHANGED_EVENT = "fmnist.dataset.changed"
STATE_DIR = ".prefect-state"
