"""The data the sections measure on: the workspace's stage outputs where they exist (paths from dvc.yaml),
else the official IDX files, so that a section runs on a fresh checkout too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.harness import log
from flows.dag import stage_out

IDX_DIR = Path(os.environ.get("FMNIST_IDX_DIR", "/usr/share/datasets/fashion-mnist"))


def train_csv(workspace: Path, scratch: Path) -> Path:
    """The full 60k train CSV: the workspace's (the fetch stage's output), else materialised from the IDX files."""
    path = workspace / stage_out("fetch", "train.csv", workspace)
    if path.exists():
        return path
    from pipeline.data.fetch import load_idx_dir, to_kaggle_table, write_kaggle_csv

    log(f"{path} missing: writing the train CSV from {IDX_DIR}")
    x, y = load_idx_dir(IDX_DIR)["train"]
    target = scratch / path.name
    write_kaggle_csv(to_kaggle_table(x, y), target)
    return target


def train_table(workspace: Path):
    """The full train split as the validate stage sees it (the ingest stage's Parquet file), else from IDX."""
    path = workspace / stage_out("ingest", "train.parquet", workspace)
    if path.exists():
        import pyarrow.parquet as pq

        return pq.read_table(path), str(path)
    from pipeline.data.fetch import load_idx_dir, to_kaggle_table

    x, y = load_idx_dir(IDX_DIR)["train"]
    return to_kaggle_table(x, y), f"{IDX_DIR} (IDX)"


def test_arrays(workspace: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The official test set as the evaluate stage reads it (the convert stage's test.npz), else from IDX."""
    path = workspace / stage_out("convert", "test.npz", workspace)
    if path.exists():
        from pipeline import io

        arrays = io.load_arrays(path)
        return arrays["x"], arrays["y"], str(path)
    from pipeline.data.fetch import load_idx_dir

    x, y = load_idx_dir(IDX_DIR)["test"]
    return x, y, f"{IDX_DIR} (IDX)"
