"""convert stage: validated Parquet -> model-ready arrays (`x`: N x 28 x 28 uint8, `y`: N uint8) per split.

Runs only after the validate gate passed: it refuses a validation report that does not say so.
Scaling to [0, 1] is left to the models (each paper states its own preprocessing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.schema import IMAGE_SIDE, LABEL_COLUMN, N_CLASSES, PIXEL_COLUMNS, SPLITS


def table_to_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """A validated 785-column uint8 table -> (images N x 28 x 28, labels N), both uint8."""
    labels = table.column(LABEL_COLUMN).to_numpy().astype(np.uint8, copy=False)
    pixels = np.empty((table.num_rows, len(PIXEL_COLUMNS)), dtype=np.uint8)
    for i, name in enumerate(PIXEL_COLUMNS):
        pixels[:, i] = table.column(name).to_numpy()
    return pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE), labels


def load_test_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One of this stage's files (x, y), checked: what evaluate, publish, export and serve read the test set with."""
    data = io.load_arrays(path)
    if "x" not in data or "y" not in data:
        raise PipelineError(f"{path}: expected arrays `x` and `y`, found {sorted(data)}")
    x, y = data["x"], data["y"]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or len(x) != len(y) or len(y) == 0:
        raise PipelineError(f"{path}: expected x of shape (N, 28, 28) and N labels, got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= N_CLASSES:
        raise PipelineError(f"{path}: labels must lie in 0..{N_CLASSES - 1}")
    return x, y


def require_passed(report_path: Path, interim_dir: Path) -> None:
    """Refuse unless the gate passed on exactly these Parquet files (their SHA-256 is in the report)."""
    report = io.read_json(report_path)
    if not report.get("success"):
        raise PipelineError(f"{report_path}: the validation gate did not pass; refusing to convert unvalidated data",
                            hint="fix the data and re-run `dvc repro validate`")
    judged = report.get("inputs_sha256") or {}
    for split in SPLITS:
        path = interim_dir / f"{split}.parquet"
        if judged.get(split) != io.sha256_file(path):
            raise PipelineError(
                f"{path} is not the file the validation gate passed ({report_path} describes other data)",
                hint="run the gate on the current data first: `dvc repro validate` (or `python -m pipeline validate`)")


def convert(interim_dir: Path, report_path: Path, out_dir: Path) -> dict[str, Path]:
    require_passed(report_path, interim_dir)
    arrays = {}
    for split in SPLITS:
        table = pq.read_table(interim_dir / f"{split}.parquet")
        arrays[split] = table_to_arrays(table)
    written = {}
    for split, (x, y) in arrays.items():
        target = out_dir / f"{split}.npz"
        io.save_arrays(target, x=x, y=y)
        written[split] = target
        print(f"convert: {split}: {len(y)} images -> {target}", file=sys.stderr)
    return written


def add_cli(parser) -> None:
    # Required: dvc.yaml is the one home of the pipeline's paths and always passes them.
    parser.add_argument("--interim", type=Path, required=True, help="directory with {train,test}.parquet")
    parser.add_argument("--report", type=Path, required=True, help="the validate stage's report.json")
    parser.add_argument("--out", type=Path, required=True, help="output directory for {train,test}.npz")


def cli(args) -> None:
    convert(args.interim, args.report, args.out)
