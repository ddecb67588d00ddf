"""Shared fixtures: small slices of the REAL Fashion-MNIST (Debian's dataset-fashion-mnist package).

Tests never fabricate pixel data: they slice the official IDX files, which `.ci/run` / `make test`
install. Slices are small so the whole suite stays fast on 2 cores.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.dvc_env import dvc_env, dvc_executable  # noqa: F401  (dvc_env: re-exported for tests)
from flows.runtime import configure_environment
from pipeline.data.fetch import load_idx_dir, to_kaggle_table, write_kaggle_csv
from pipeline.params import load_params
from pipeline.schema import CSV_NAMES

REPO = Path(__file__).resolve().parents[1]
DEBIAN_IDX_DIR = Path(os.environ.get("FMNIST_IDX_DIR", "/usr/share/datasets/fashion-mnist"))

# Tests run Prefect, DVC and TensorFlow in this process: the same offline, quiet defaults as `python -m flows`.
configure_environment()


@functools.cache
def shipped_params() -> dict:
    return load_params(REPO / "params.yaml")


def shipped_section(name: str, **overrides) -> dict:
    """The shipped params.yaml section `name` (a fresh copy) with `overrides`: every key stays required."""
    return {**copy.deepcopy(shipped_params()[name]), **overrides}


def shipped_validate_params():
    """params.yaml's `validate` section as shipped: what the stage runs with on the full dataset."""
    from pipeline.params import ValidateParams, section

    return section(ValidateParams, "validate", copy.deepcopy(shipped_params()))


def shipped_hyperparams(name: str) -> dict:
    """The shipped params.yaml `models.<name>` (a fresh copy): the only home of each model's hyperparameters."""
    return copy.deepcopy(shipped_params()["models"][name])


@pytest.fixture(scope="session")
def fmnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The full official dataset as uint8 arrays: {'train': (x 60000x28x28, y), 'test': (x 10000x28x28, y)}."""
    if not DEBIAN_IDX_DIR.is_dir():
        pytest.fail(f"{DEBIAN_IDX_DIR} missing: install Debian's dataset-fashion-mnist (make setup does)")
    return load_idx_dir(DEBIAN_IDX_DIR)


@pytest.fixture(scope="session")
def small_split(fmnist) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny real train/val/test split (600/200/300 images) for model and evaluation tests."""
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    return {"train": (x[:600], y[:600]), "val": (x[600:800], y[600:800]), "test": (xt[:300], yt[:300])}


def write_csv_slice(fmnist, out_dir: Path, train_rows: int = 1000, test_rows: int = 300) -> dict[str, Path]:
    """Write Kaggle-layout CSVs holding the first rows of the real train and test sets."""
    paths = {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        x, y = fmnist[split]
        paths[split] = out_dir / CSV_NAMES[split]
        write_kaggle_csv(to_kaggle_table(x[:rows], y[:rows]), paths[split])
    return paths


@pytest.fixture
def csv_slice(fmnist, tmp_path) -> dict[str, Path]:
    """Kaggle-layout CSVs (1,000 train + 300 test real rows) in tmp_path/raw."""
    return write_csv_slice(fmnist, tmp_path / "raw")


def run_cli(*args: str, cwd: Path | str = REPO, check: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ...` the way dvc.yaml does, in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def make_workspace(dest: Path, fmnist, *, train_rows: int = 1000, test_rows: int = 300,
                   params_overrides: dict | None = None) -> Path:
    """A throw-away git+DVC workspace with the repo's dvc.yaml/params.yaml over a real CSV slice.

    Stage commands run the installed `pipeline` package with this interpreter (PATH is set by
    `dvc_env`). Params are shrunk to the slice so the real DAG runs in seconds.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    source = dest / "source"
    write_csv_slice(fmnist, source, train_rows, test_rows)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["fetch"]["source"] = str(source)
    params["validate"]["expected_rows"] = {"train": train_rows, "test": test_rows}
    params["validate"]["class_share_tolerance"] = 0.05
    params["split"]["train_size"] = int(train_rows * 0.8)
    params["split"]["val_size"] = train_rows - int(train_rows * 0.8)
    for key, value in (params_overrides or {}).items():
        node = params
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_dvc(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`dvc <args>` in `cwd`, with flows/dvc_env.py's executable and environment (the one home of both)."""
    return subprocess.run([dvc_executable(), *args], cwd=cwd, env=dvc_env(), capture_output=True, text=True,
                          timeout=timeout)
