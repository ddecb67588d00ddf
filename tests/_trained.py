"""A workspace with tiny REAL trained and evaluated models, built once per test session (conftest's `trained`
fixture, through the train and evaluate stages' own code) for the tests of predict, export, serve and the model
cards.

    <root>/params.yaml                 the shipped params.yaml, train.models/export.models set to the models below
    <root>/models/<name>/seed-42/      cnn-dropout-1 and cnn-ours (1 epoch on 600 real images), gaussian-nb
    <root>/metrics/<name>/seed-42.*    evaluated on the first 300 official test images
    <root>/data/processed/test.npz     the full official test set (x, y)
    <root>/data/split/                 the 600/200 real train/validation slice, class_counts.json
    <root>/reports/                    publish's report and model cards for these models
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline.training import evaluate as ev
from pipeline import io, publish
from pipeline.training import train
from pipeline.data.split import class_counts
from tests.conftest import REPO, shipped_hyperparams

SEED = 42
MODELS = ("cnn-dropout-1", "cnn-ours", "gaussian-nb")
TINY = {"cnn-dropout-1": {"epochs": 1, "batch_size": 32}, "cnn-ours": {"epochs": 1, "batch_size": 32},
        "gaussian-nb": {}}
N_EVAL = 300


def build_trained_workspace(root: Path, fmnist, small_split) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["models"] = list(MODELS)
    params["train"]["seeds"] = [SEED]
    params.setdefault("export", {})["models"] = ["cnn-dropout-1", "cnn-ours"]
    for name in MODELS:
        params["models"][name] = {**shipped_hyperparams(name), **TINY[name]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    split = root / "data" / "split"
    for part in ("train", "val"):
        x, y = small_split[part]
        io.save_arrays(split / f"{part}.npz", x=x, y=y)
    xt, yt = fmnist["test"]
    io.save_arrays(root / "data" / "processed" / "test.npz", x=xt, y=yt)
    (x, y), (xv, yv) = small_split["train"], small_split["val"]
    io.write_json(split / "class_counts.json",
                  {"seed": 42, "sizes": {"train": len(y), "val": len(yv), "test": N_EVAL},
                   "class_counts": {"train": class_counts(y), "val": class_counts(yv),
                                    "test": class_counts(yt[:N_EVAL])}})
    for name in MODELS:
        out = train.run_dir(root / "models", name, SEED)
        train.run(name, split, out, copy.deepcopy(params), seed=SEED, checkpoint_root=root / ".checkpoints",
                  verbose=0)
        metrics, probs = ev.evaluate_model(name, out, xt[:N_EVAL], yt[:N_EVAL], batch_size=128, latency_calls=2,
                                           warmup_calls=1)
        ev.write_outputs(root / "metrics", name, SEED, metrics, yt[:N_EVAL], probs)
    publish.publish(list(MODELS), metrics_dir=root / "metrics", models_dir=root / "models", out_dir=root / "reports",
                    test_path=None, class_counts_path=split / "class_counts.json", seeds=[SEED], mcnemar_top=2, alpha=0.05,
                    sample_images=4, dpi=40)
    return root
