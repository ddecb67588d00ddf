"""README "How to add a model", done exactly as written: the README's own snippets are applied to a copy of the
project (builder appended to pipeline/models/cnn.py, entry appended to the registry's `_SPECS`, the params.yaml
block), then the new model goes through train, evaluate and publish (the commands dvc.yaml runs) on a slice of the
real Fashion-MNIST. If the documented recipe stops working, this test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import io
from pipeline.data.split import class_counts
from pipeline.models import registry
from tests.conftest import REPO, run_dvc

NAME, SEED, N_TEST = "my-cnn", 42, 300
# Tiny values for the test only (the README's values are the recipe; these keep one epoch to seconds).
TINY = {"epochs": 1, "batch_size": 32, "filters": [8], "dense_units": 16}


def readme_block(marker: str, lang: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"<!-- {marker} -->\s*```{lang}\n(.*?)```", text, re.S)
    assert block, f"README must hold the {marker} block"
    return block.group(1)


def apply_readme_recipe(ws: Path) -> dict:
    """The three documented edits, on a copy of the package and params.yaml; returns the new params."""
    builder, entry = readme_block("add-model-builder", "python"), readme_block("add-model-registry", "python")
    params_block = yaml.safe_load(readme_block("add-model-params", "yaml"))

    cnn = ws / "pipeline" / "models" / "cnn.py"                       # 1. the builder, appended
    cnn.write_text(cnn.read_text(encoding="utf-8").rstrip("\n") + "\n\n\n" + builder, encoding="utf-8")

    reg = ws / "pipeline" / "models" / "registry.py"                  # 2. the entry, at the end of _SPECS
    text = reg.read_text(encoding="utf-8")
    end_of_specs = re.search(r"^_SPECS\b.*?^\]\n", text, re.S | re.M)
    assert end_of_specs, "registry.py: the `_SPECS = [...]` list the README tells users to extend"
    at = end_of_specs.end() - len("]\n")
    reg.write_text(text[:at] + entry + text[at:], encoding="utf-8")

    params = yaml.safe_load((ws / "params.yaml").read_text(encoding="utf-8"))   # 3. params.yaml
    assert set(params_block) == {"models", "train"} and params_block["train"]["models"] == [NAME]
    params["models"][NAME] = {**params_block["models"][NAME], **TINY}
    params["train"]["models"] = [NAME]          # this workspace trains only the new model
    params["train"]["seeds"] = [SEED]
    params["evaluate"].update(latency_calls=2, warmup_calls=1)
    params["publish"].update(sample_images=4, dpi=40, mcnemar_top=2)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


def run_stage(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ws), TF_CPP_MIN_LOG_LEVEL="2")   # the copy's package, not the repo's
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"pipeline {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_a_model_added_the_documented_way_trains_evaluates_and_publishes(tmp_path, fmnist, small_split):
    assert NAME not in registry.names(), "the example must be a new model"
    ws = tmp_path / "project"
    shutil.copytree(REPO / "pipeline", ws / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, ws / name)
    (ws / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", ws / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    apply_readme_recipe(ws)

    # dvc.yaml needs no change: its matrix now has the new model's stages.
    stages = run_dvc("stage", "list", "--name-only", cwd=ws, timeout=120)
    assert stages.returncode == 0, stages.stderr
    assert {f"train@{NAME}-{SEED}", f"evaluate@{NAME}-{SEED}", "publish"} <= set(stages.stdout.split())

    # The data the stages read: a real 600/200 train/val slice and the first 300 official test images.
    (x, y), (xv, yv) = small_split["train"], small_split["val"]
    xt, yt = fmnist["test"][0][:N_TEST], fmnist["test"][1][:N_TEST]
    io.save_arrays(ws / "data/split/train.npz", x=x, y=y)
    io.save_arrays(ws / "data/split/val.npz", x=xv, y=yv)
    io.save_arrays(ws / "data/processed/test.npz", x=xt, y=yt)
    io.write_json(ws / "data/split/class_counts.json",
                  {"seed": 42, "sizes": {"train": len(y), "val": len(yv), "test": N_TEST},
                   "class_counts": {"train": class_counts(y), "val": class_counts(yv), "test": class_counts(yt)}})

    # The commands of dvc.yaml's train@, evaluate@ and publish stages.
    run_stage(ws, "train", "--model", NAME, "--seed", str(SEED), "--data", "data/split",
              "--out", f"models/{NAME}/seed-{SEED}", "--plot", f"plots/history/{NAME}/seed-{SEED}.csv")
    run_stage(ws, "evaluate", "--model", NAME, "--seed", str(SEED), "--models-dir", "models",
              "--test", "data/processed/test.npz", "--out", "metrics")
    run_stage(ws, "publish", "--metrics", "metrics", "--models-dir", "models", "--test", "data/processed/test.npz",
              "--class-counts", "data/split/class_counts.json", "--out", "reports", "--summary", "accuracy.json")

    meta = json.loads((ws / f"models/{NAME}/seed-{SEED}/train.json").read_text())
    assert meta["model"] == NAME and meta["family"] == "keras"
    assert (ws / f"models/{NAME}/seed-{SEED}/model.keras").exists()
    assert (ws / f"plots/history/{NAME}/seed-{SEED}.csv").exists()
    metrics = json.loads((ws / f"metrics/{NAME}/seed-{SEED}.json").read_text())
    assert metrics["model"] == NAME and metrics["source"] == registry.OURS
    accuracy = json.loads((ws / "accuracy.json").read_text())[NAME]["test_acc"]   # percent
    assert 15 < accuracy <= 100, f"one epoch on 600 real images should beat chance (10%): {accuracy}"
    assert NAME in (ws / "reports/comparison.md").read_text()
    assert (ws / f"reports/model-cards/{NAME}.md").exists()


def test_readme_snippets_are_valid_python():
    compile(readme_block("add-model-builder", "python"), "add-model-builder", "exec")
    compile("_SPECS = [\n" + readme_block("add-model-registry", "python") + "]\n", "add-model-registry", "exec")
