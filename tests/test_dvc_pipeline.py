"""The real DVC DAG (fetch -> ingest -> validate -> convert -> split) on a real data slice, via `dvc repro`."""

from __future__ import annotations

import csv
import hashlib
import re

import pytest
import yaml

from tests.conftest import MODELS, copy_workspace, run_dvc

DATA_STAGES = ["fetch", "ingest", "validate", "convert", "images", "split"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, data_workspace):
    return copy_workspace(data_workspace.path, tmp_path_factory.mktemp("ws") / "ws")


def test_first_repro_runs_every_data_stage(data_workspace):
    assert _ran(data_workspace.first_run) == set(DATA_STAGES)


def test_repro_builds_every_data_output(workspace):
    for path in ("data/raw/fashion-mnist_train.csv", "data/interim/train.parquet", "data/validation/report.json",
                 "data/processed/test.npz", "data/split/train.npz", "data/split/val.npz",
                 "data/split/class_counts.json"):
        assert (workspace / path).is_file(), path
    assert (workspace / "dvc.lock").is_file()


def test_second_repro_is_a_no_op(workspace):
    proc = run_dvc("repro", "split", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert _ran(proc.stdout) == set()
    assert "up to date" in proc.stdout.lower() or "didn't change" in proc.stdout


def test_changing_one_param_reruns_only_dependent_stages(workspace):
    params_path = workspace / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    before = _digest(workspace / "data/interim/train.parquet")
    params["split"]["seed"] = params["split"]["seed"] + 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_dvc("repro", "split", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert _ran(proc.stdout) == {"split"}
    assert _digest(workspace / "data/interim/train.parquet") == before


# ------------------------------------------------------------------ models: train@ / evaluate@ / publish
@pytest.fixture(scope="module")
def model_workspace(tmp_path_factory, models_workspace):
    # conftest's models_workspace: the data stages were cached, so exactly the model stages ran
    assert _ran(models_workspace.first_run) == \
        {f"{stage}@{m}-42" for stage in ("train", "evaluate") for m in MODELS} | {"publish"}
    return copy_workspace(models_workspace.path, tmp_path_factory.mktemp("models-ws") / "ws")


def _hyperparameter_row(workspace, model: str) -> str:
    md = (workspace / "reports" / "comparison.md").read_text()
    section = md[md.index("Hyperparameters used in this run"):]
    return next(line for line in section.splitlines() if line.startswith(f"| {model} "))


def test_changing_one_models_params_reruns_only_that_model_and_updates_the_tables(model_workspace):
    ws = model_workspace
    untouched = {p: _digest(ws / p)
                 for p in ("metrics/gaussian-nb/seed-42.json", "models/gaussian-nb/seed-42/train.json")}
    assert "max_depth=10" in _hyperparameter_row(ws, "decision-tree")
    params_path = ws / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["models"]["decision-tree"]["max_depth"] = 3
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    proc = run_dvc("repro", "publish", cwd=ws)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ran(proc.stdout) == {"train@decision-tree-42", "evaluate@decision-tree-42", "publish"}
    assert "max_depth=3" in _hyperparameter_row(ws, "decision-tree")
    for path, digest in untouched.items():
        assert _digest(ws / path) == digest, path
    with open(ws / "reports" / "comparison.csv", newline="") as fh:
        assert sorted(row["model"] for row in csv.DictReader(fh)) == sorted(MODELS)
