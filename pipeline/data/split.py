"""split stage: stratified, seeded train/validation split of the official training set.

The official 10,000-image test set is not touched here; only evaluate reads it. Per-split class
counts (train, val, and test for reference) go to a small JSON that DVC tracks as a metric.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.params import SplitParams, section
from pipeline.schema import CLASS_NAMES, N_CLASSES


def stratified_split(y: np.ndarray, train_size: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train_index, val_index) with class proportions preserved in both."""
    if train_size + val_size > len(y):
        raise PipelineError(
            f"split sizes {train_size} + {val_size} exceed the {len(y)} training rows",
            hint="lower split.train_size / split.val_size in params.yaml",
        )
    index = np.arange(len(y))
    train_idx, val_idx = train_test_split(
        index, train_size=train_size, test_size=val_size, stratify=y, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


def class_counts(y: np.ndarray) -> dict[str, int]:
    counts = np.bincount(y, minlength=N_CLASSES)
    return {name: int(c) for name, c in zip(CLASS_NAMES, counts)}


def add_cli(parser) -> None:
    # Required: dvc.yaml is the one home of the pipeline's paths and always passes them.
    parser.add_argument("--processed", type=Path, required=True, help="directory with {train,test}.npz")
    parser.add_argument("--out", type=Path, required=True, help="output directory")


def cli(args) -> None:
    params = section(SplitParams, "split", path=args.params)
    data = io.load_arrays(args.processed / "train.npz")
    test = io.load_arrays(args.processed / "test.npz")
    train_idx, val_idx = stratified_split(data["y"], params.train_size, params.val_size, params.seed)
    io.save_arrays(args.out / "train.npz", x=data["x"][train_idx], y=data["y"][train_idx], index=train_idx)
    io.save_arrays(args.out / "val.npz", x=data["x"][val_idx], y=data["y"][val_idx], index=val_idx)
    summary = {
        "seed": params.seed,
        "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test["y"])},
        "class_counts": {
            "train": class_counts(data["y"][train_idx]),
            "val": class_counts(data["y"][val_idx]),
            "test": class_counts(test["y"]),
        },
    }
    io.write_json(args.out / "class_counts.json", summary)
    print(f"split: train {len(train_idx)} / val {len(val_idx)} (seed {params.seed}); test untouched "
          f"({len(test['y'])})", file=sys.stderr)
