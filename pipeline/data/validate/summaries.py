"""Summaries: reduce a split's (N x 785) table to the small frames the expectations run on.

Great Expectations costs per expectation, not per row, so one expectation per pixel column would make the gate
slow. numpy/pyarrow fold the table into small derived frames first; a single bad cell still fails its row's and
its column's summary:

- `columns`    the real column names (a zero-row frame): ordered list label, pixel1..pixel784
- `rows`       one row per image: row, label, null_count, pixel_min, pixel_max, non_integer_count
- `per_column` one row per column: column, position, dtype, null_count, min, max, is_integer
- `classes`    one row per class 0..9: class, name, count, share

Content (pipeline.data.content computes it with numpy; these frames carry it into the same GX suite):
- `content`    one row per image: row, duplicate_of (an earlier identical row or -1), degenerate ("", blank,
               constant, saturated) and, for the test split, in_train / near_train (a training row identical
               to it / within the near-duplicate distance, or -1) and near_rms
- `drift`      one row per class: rows, pixel_js, mean_image_rmse, intensity_psi against the reference
               profile (null for classes too small to judge) and looks_like (the class's part of the split's
               diagnosis, content.diagnose, which the report keeps as summary.content.drift.diagnosis)

NaN floats count as nulls (Arrow keeps them apart; we do not). Row numbers are 0-based positions in the
Parquet file, which keeps the CSV's order: CSV line = row + 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data import content
from pipeline.data.content import image_matrix
from pipeline.params import ValidateParams
from pipeline.schema import CLASS_NAMES, LABEL_COLUMN, N_CLASSES, PIXEL_COLUMNS, PIXEL_MAX, PIXEL_MIN


@dataclass
class Summaries:
    """The derived frames one split is validated on, plus what is needed to explain a failure."""

    table: pa.Table
    frames: dict[str, Any]  # name -> pandas.DataFrame
    images: Any = None      # the (N, 784) uint8 pixels once content_frames has extracted them
    diagnosis: dict | None = None   # content.diagnose's verdict on the split's drift, once content_frames has run


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pandas(data, preserve_index=False)


def _column_values(col: pa.ChunkedArray) -> np.ndarray | None:
    """A numeric column as a numpy array (nulls -> NaN, as float); None if not numeric."""
    typ = col.type
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
        return None
    return col.to_numpy()


def summarise(data: Any) -> Summaries:
    """Reduce a (N x 785) table to the small frames the expectations run on. numpy/pyarrow only."""
    import pandas as pd

    table = _as_table(data)
    n = table.num_rows
    names = table.column_names
    row_nulls = np.zeros(n, dtype=np.int64)
    row_non_int = np.zeros(n, dtype=np.int64)
    row_min = np.full(n, np.inf)
    row_max = np.full(n, -np.inf)
    labels = np.full(n, np.nan)
    label_seen = False
    col_rows: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        col = table.column(i)
        values = _column_values(col)
        is_label = name == LABEL_COLUMN and not label_seen
        if values is None:  # strings, booleans, ...: every cell is a non-integer
            null_mask = col.is_null().to_numpy(zero_copy_only=False)
            row_nulls += null_mask
            row_non_int += ~null_mask
            if is_label:
                label_seen = True
            col_rows.append(dict(column=name, position=i + 1, dtype=str(col.type), null_count=int(null_mask.sum()),
                                 min=np.nan, max=np.nan, is_integer=False))
            continue
        if values.dtype.kind == "f":
            nan_mask = np.isnan(values)
            null_count = int(nan_mask.sum())
            if null_count:
                row_nulls += nan_mask
            with np.errstate(invalid="ignore"):
                frac = ~nan_mask & ((values != np.floor(values)) | np.isinf(values))  # 2.5, inf
            non_int = int(frac.sum())
            if non_int:
                row_non_int += frac
            # An integer column with nulls arrives here as float: its declared type still decides.
            is_integer = non_int == 0 if pa.types.is_floating(col.type) else True
            vmin = float(np.nanmin(values)) if null_count < n else np.nan
            vmax = float(np.nanmax(values)) if null_count < n else np.nan
        else:
            null_count, is_integer = 0, True
            vmin = float(values.min()) if n else np.nan
            vmax = float(values.max()) if n else np.nan
        if is_label:
            label_seen = True
            labels = values.astype(np.float64, copy=False)
        else:
            np.fmin(row_min, values, out=row_min)
            np.fmax(row_max, values, out=row_max)
        col_rows.append(dict(column=name, position=i + 1, dtype=str(col.type), null_count=null_count,
                             min=vmin, max=vmax, is_integer=bool(is_integer)))
    empty = (row_min == np.inf) & (row_max == -np.inf)  # rows without a single numeric pixel value
    row_min[empty] = np.nan
    row_max[empty] = np.nan

    valid = ~np.isnan(labels)
    valid[valid] = (labels[valid] >= 0) & (labels[valid] < N_CLASSES) & (labels[valid] == np.floor(labels[valid]))
    counts = np.bincount(labels[valid].astype(np.int64), minlength=N_CLASSES)[:N_CLASSES]
    shares = counts / n if n else np.zeros(N_CLASSES)

    frames = {
        "columns": pd.DataFrame(columns=list(names)),
        "rows": pd.DataFrame({
            "row": np.arange(n, dtype=np.int64), "label": labels, "null_count": row_nulls,
            "pixel_min": row_min, "pixel_max": row_max, "non_integer_count": row_non_int,
        }),
        "per_column": pd.DataFrame(col_rows, columns=["column", "position", "dtype", "null_count", "min", "max",
                                                      "is_integer"]),
        "classes": pd.DataFrame({"class": np.arange(N_CLASSES), "name": list(CLASS_NAMES),
                                 "count": counts.astype(np.int64), "share": shares}),
    }
    return Summaries(table=table, frames=frames)


def content_input(summ: Summaries) -> tuple[np.ndarray, np.ndarray] | None:
    """(pixels (N, 784) uint8, labels) when the format summaries show a table the content checks can read, else
    None: a table with nulls, missing or repeated columns, non-integers or values outside their ranges is not
    judged for content (its format failures already stop the gate)."""
    cols = summ.frames["per_column"]
    pixels = cols[cols["column"] != LABEL_COLUMN]
    labels = summ.frames["rows"]["label"].to_numpy()
    readable = (cols["column"].is_unique and set(pixels["column"]) == set(PIXEL_COLUMNS)
                and LABEL_COLUMN in set(cols["column"]) and bool((cols["null_count"] == 0).all())
                and bool(cols["is_integer"].all()) and bool((pixels["min"] >= PIXEL_MIN).all())
                and bool((pixels["max"] <= PIXEL_MAX).all()) and not np.isnan(labels).any()
                and bool(((labels >= 0) & (labels < N_CLASSES)).all()))
    return (image_matrix(summ.table), labels.astype(np.int64)) if readable else None


def content_frames(summ: Summaries, params: ValidateParams, train_images: np.ndarray | None = None,
                   profile: dict | None = None) -> dict[str, Any]:
    """Add the `content` and `drift` frames to summ.frames; return the content summary for the report.

    train_images: the training split's (N, 784) pixels, given when this split is the test split (leakage
    checks). profile: the reference profile (drift). A table that fails the format checks (nulls, wrong
    columns, values outside 0..255) gets empty content frames: its format failures already stop the gate."""
    import pandas as pd

    n = summ.table.num_rows
    judged = content_input(summ)
    frame = pd.DataFrame({"row": np.arange(n, dtype=np.int64), "duplicate_of": np.full(n, -1, np.int64),
                          "degenerate": np.full(n, "", object), "in_train": np.full(n, -1, np.int64),
                          "near_train": np.full(n, -1, np.int64), "near_rms": np.full(n, np.nan)})
    drift_rows = [{"class": c, "name": name, "rows": 0, "pixel_js": None, "mean_image_rmse": None,
                   "intensity_psi": None, "looks_like": ""} for c, name in enumerate(CLASS_NAMES)]
    summary: dict[str, Any] = {}
    if judged is None:
        summary["skipped"] = "the format checks failed, so the content was not judged"
    else:
        x, y = judged
        summ.images = x
        frame["duplicate_of"] = content.duplicate_of(x)
        frame["degenerate"] = content.degenerate_kind(x)
        summary.update({"duplicates": int((frame["duplicate_of"] >= 0).sum()),
                        "degenerate_images": {kind: int(c) for kind, c in
                                              frame["degenerate"][frame["degenerate"] != ""].value_counts().items()}})
        if train_images is not None:
            max_rms = float(params.near_duplicates["max_rms"])
            frame["in_train"] = content.found_in(x, train_images)
            near, rms = content.nearest_within(x, train_images, max_rms)
            frame["near_train"], frame["near_rms"] = near, rms
            n_near = int((near >= 0).sum())
            summary["test_in_train"] = int((frame["in_train"] >= 0).sum())
            closest = np.flatnonzero(near >= 0)
            closest = closest[np.argsort(rms[closest], kind="stable")]
            closest = np.concatenate([closest[:4], closest[4:][-4:]])   # the closest, and the farthest still within
            summary["near_duplicates"] = {
                "count": n_near, "share": n_near / n if n else 0.0, "max_rms": max_rms,
                "method": "nearest training image by RMS pixel difference on the 0..1 scale (PCA-filtered "
                          "candidates, confirmed on all 784 pixels)",
                "closest_pairs": [{"row": int(i), "train_row": int(near[i]), "rms": round(float(rms[i]), 4)}
                                  for i in closest]}
        if profile is not None:
            min_rows = int(params.drift["min_class_rows"])
            summ.diagnosis = content.diagnose(x, y, profile, min_rows)
            drift_rows = content.drift(x, y, profile, min_rows, summ.diagnosis["looks_like"])
            summary["drift"] = {"reference": str(params.drift["reference"]), "classes": drift_rows,
                                "diagnosis": {k: summ.diagnosis[k] for k in ("cause", "message", "statistics")}}
    summ.frames["content"] = frame
    summ.frames["drift"] = pd.DataFrame(drift_rows, columns=["class", "name", "rows", "pixel_js", "mean_image_rmse",
                                                             "intensity_psi", "looks_like"])
    return summary
