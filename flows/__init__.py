"""Prefect orchestration of the DVC pipeline: one task per dvc.yaml stage, a dataset watcher, deployments.

Not a second DAG: the stage list and its order are read from dvc.yaml (through DVC) on every run, and
every stage runs through `dvc repro --single-item`, so DVC stays the cache and the source of truth.
Entry point: `python -m flows run|watch|serve` (see docs/orchestration.md).
"""

from flows.runtime import configure_environment as _configure_environment

# Here, not in the entry points: prefect must see these before its first import, and it is imported at module level
# by artifacts, pipeline_flow, parallel and watcher, lazily by deployments, and by tests right after `import flows`.
_configure_environment()

DATASET_CHANGED_EVENT = "fmnist.dataset.changed"
STATE_DIR = ".prefect-state"
