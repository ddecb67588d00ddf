"""Where a run's files live on disk: models/<name>/seed-<seed>/ (train), metrics/<name>/seed-<seed>.* (evaluate),
and which seed a command means when none is given. Train writes this layout; evaluate, publish, export, predict
and serve read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.models import registry
from pipeline.params import TrainParams, build


def run_dir(root: Path, name: str, seed: int) -> Path:
    """Where one (model, seed) run's files live under models/ (and metrics/): <root>/<name>/seed-<seed>."""
    return Path(root) / name / f"seed-{seed}"


def seed_of(params: dict[str, Any], seed: int | None) -> int:
    """The run's seed: `seed` when given (the DVC stages always pass one), else the first of `train.seeds`."""
    return build(TrainParams, params.get("train", {}), "train").seeds[0] if seed is None else int(seed)


def output_paths(out_dir: Path, name: str, seed: int) -> dict[str, Path]:
    """The evaluate stage's files for one (model, seed) run: <out_dir>/<name>/seed-<seed>.{json,...}."""
    stem = Path(out_dir) / name / f"seed-{seed}"
    return {"metrics": stem.with_suffix(".json"), "predictions": stem.with_suffix(".predictions.npz"),
            "confusion": stem.with_suffix(".confusion.csv")}


def model_dir_for(models_dir: Path, name: str, seed: int) -> Path:
    """The trained run directory of a registered model, or a PipelineError saying how to make it."""
    registry.get(name)  # an unknown name lists the valid ones
    directory = run_dir(models_dir, name, seed)
    if not (directory / "train.json").exists():
        raise PipelineError(f"{directory}: no trained model `{name}` (seed {seed}) here",
                            hint=f"train it first: `dvc repro train@{name}-{seed}` (add `{name}` to params.yaml "
                                 "train.models if it is not there), or pass --models-dir / --seed")
    return directory
