"""validate stage: a Great Expectations 1.x suite that is a HARD gate on data/interim/{train,test}.parquet.

GX's cost is per expectation, not per row (one expectation per pixel column would take ~20 s), so the
785-column table is first reduced with numpy/pyarrow to small derived frames, and a handful of
expectations run on those. A single bad cell among the 47M still fails a row's and a column's summary:

- `columns`    the real column names (a zero-row frame): ordered list label, pixel1..pixel784
- `rows`       one row per image: row, label, null_count, pixel_min, pixel_max, non_integer_count
               -> row count, no nulls, labels 0..9, pixels 0..255, integers only
- `per_column` one row per column: column, position, dtype, null_count, min, max, is_integer
               -> no nulls, integer columns, values 0..255
- `classes`    one row per class 0..9: class, name, count, share
               -> every class present, share within 0.1 +- class_share_tolerance

Content (pipeline.data.content computes it with numpy; these frames carry it into the same GX suite):
- `content`    one row per image: row, duplicate_of (an earlier identical row or -1), degenerate ("", blank,
               constant, saturated) and, for the test split, in_train / near_train (a training row identical
               to it / within the near-duplicate distance, or -1) and near_rms
               -> at most `max_share` of the rows each (GX `mostly`); severity from `on_exceed`
- `drift`      one row per class: rows, pixel_js, mean_image_rmse, intensity_psi against the reference
               profile (null for classes too small to judge) -> each under its limit

NaN floats count as nulls (Arrow keeps them apart; we do not). Row numbers are 0-based positions in
the Parquet file, which keeps the CSV's order: CSV line = row + 2.

Outputs: a JSON report (a DVC metric) and GX Data Docs HTML. On failure the report goes to
`<report stem>.failed.json` and the docs to `<docs>.failed`, so the previous good outputs stay
byte-identical, and ValidationFailed (exit code 3) names each failed expectation with examples.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.errors import PipelineError, ValidationFailed
from pipeline.params import ValidateParams, section
from pipeline.schema import CLASS_NAMES, CSV_COLUMNS, LABEL_COLUMN, N_CLASSES, PIXEL_COLUMNS, SPLITS

PIXEL_MIN, PIXEL_MAX = 0, 255
ROW_HINT = "rows are 0-based positions in the Parquet file (= CSV line - 2)"

# frame -> the column GX reports offending entries by
INDEX_COLUMN = {"rows": "row", "per_column": "column", "classes": "class", "content": "row", "drift": "class"}
# per-image content check -> (its column in the `content` frame, the value of an image that passes, whether it
# compares the test split with the training split); each check's limit is params.yaml `validate.<check>`
CONTENT_CHECKS = {"duplicates": ("duplicate_of", -1, False), "degenerate_images": ("degenerate", "", False),
                  "test_in_train": ("in_train", -1, True), "near_duplicates": ("near_train", -1, True)}
CONTENT_LIMITS = (*CONTENT_CHECKS, "drift")
DRIFT_STATISTICS = {"pixel_js": ("max_pixel_js", "pixel-value histogram Jensen-Shannon distance"),
                    "mean_image_rmse": ("max_mean_image_rmse", "mean-image RMS difference"),
                    "intensity_psi": ("max_intensity_psi", "per-image intensity PSI")}


# ----------------------------------------------------------------------------------- summaries (pure)
@dataclass
class Summaries:
    """The derived frames one split is validated on, plus what is needed to explain a failure."""

    table: pa.Table
    frames: dict[str, Any]  # name -> pandas.DataFrame
    images: Any = None      # the (N, 784) uint8 pixels once content_frames has extracted them


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
    from pipeline.data.content import image_matrix

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

    from pipeline.data import content

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
            drift_rows = content.drift(x, y, profile, int(params.drift["min_class_rows"]))
            summary["drift"] = {"reference": str(params.drift["reference"]), "classes": drift_rows}
    summ.frames["content"] = frame
    summ.frames["drift"] = pd.DataFrame(drift_rows, columns=["class", "name", "rows", "pixel_js", "mean_image_rmse",
                                                             "intensity_psi", "looks_like"])
    return summary


# ------------------------------------------------------------------------------------- expectations
def check_params(params: ValidateParams, splits: tuple[str, ...] = SPLITS) -> None:
    missing = [s for s in splits if s not in (params.expected_rows or {})]
    if missing:
        raise PipelineError(f"params.yaml: validate.expected_rows has no entry for {', '.join(missing)}",
                            hint="give the expected row count of every split, e.g. {train: 60000, test: 10000}")
    for split in splits:
        value = params.expected_rows[split]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PipelineError(
                f"params.yaml: validate.expected_rows.{split} must be a positive integer, got {value!r}")
    tol = params.class_share_tolerance
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 <= tol <= 1 / N_CLASSES:
        raise PipelineError(f"params.yaml: validate.class_share_tolerance must be in 0..0.1, got {tol!r}")
    if not isinstance(params.max_examples, int) or params.max_examples < 1:
        raise PipelineError(
            f"params.yaml: validate.max_examples must be a positive integer, got {params.max_examples!r}")
    numeric = {"max_share": (0, 1), "max_rms": (0, 1), "min_class_rows": (1, None), "max_pixel_js": (0, 1),
               "max_mean_image_rmse": (0, 1), "max_intensity_psi": (0, None)}
    required = {"duplicates": {"max_share"}, "test_in_train": {"max_share"}, "degenerate_images": {"max_share"},
                "near_duplicates": {"max_share", "max_rms"},
                "drift": {"reference", "min_class_rows", "max_pixel_js", "max_mean_image_rmse", "max_intensity_psi"}}
    for name in CONTENT_LIMITS:
        limit = getattr(params, name)
        keys = required[name] | {"on_exceed"}
        if not isinstance(limit, dict) or set(limit) != keys:
            raise PipelineError(f"params.yaml: validate.{name} must be a mapping with exactly the keys "
                                f"{', '.join(sorted(keys))}, got {limit!r}")
        if limit["on_exceed"] not in ("fail", "warn"):
            raise PipelineError(f"params.yaml: validate.{name}.on_exceed must be fail or warn, "
                                f"got {limit['on_exceed']!r}")
        for key, (lo, hi) in numeric.items():
            if key in limit:
                value = limit[key]
                if (not isinstance(value, (int, float)) or isinstance(value, bool) or value < lo
                        or (hi is not None and value > hi)):
                    bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                    raise PipelineError(f"params.yaml: validate.{name}.{key} must be a number in {bounds}, "
                                        f"got {value!r}")


def share_bounds(params: ValidateParams) -> tuple[float, float]:
    tol = float(params.class_share_tolerance)
    return round(1 / N_CLASSES - tol, 10), round(1 / N_CLASSES + tol, 10)


def _severity(limit: dict) -> str:
    return "critical" if limit["on_exceed"] == "fail" else "warning"


def _mostly(limit: dict) -> float:
    return round(1.0 - float(limit["max_share"]), 12)


def build_expectations(split: str, params: ValidateParams, cross_split: bool = False) -> dict[str, list]:
    """frame name -> the GX expectations run on it. `meta.check` names each check in the report.

    cross_split: the test split is judged against the training split too (leakage checks)."""
    import great_expectations as gx

    E = gx.expectations
    lo, hi = share_bounds(params)

    def m(check: str, description: str) -> dict:
        return {"check": check, "description": description}

    def share(limit: dict) -> str:
        return f"at most {100 * float(limit['max_share']):g}% of the rows"

    drift = params.drift
    what = {"duplicates": "images repeated exactly within the split",
            "degenerate_images": "blank, constant or saturated images",
            "test_in_train": "test images identical to a training image",
            "near_duplicates": f"test images within RMS pixel difference {params.near_duplicates['max_rms']:g} of a "
                               "training image"}
    content_rows = [
        E.ExpectColumnValuesToBeInSet(column=column, value_set=[passing], mostly=_mostly(limit),
                                      severity=_severity(limit), meta=m(check, f"{what[check]}: {share(limit)}"))
        for check, (column, passing, needs_train) in CONTENT_CHECKS.items() if cross_split or not needs_train
        for limit in (getattr(params, check),)]
    drift_checks = [
        E.ExpectColumnValuesToBeBetween(column=column, max_value=float(drift[key]), severity=_severity(drift),
                                        meta=m(f"drift_{column}", f"{what} vs the reference profile <= "
                                                                  f"{drift[key]:g} per class"))
        for column, (key, what) in DRIFT_STATISTICS.items()]
    return {
        "columns": [
            E.ExpectTableColumnsToMatchOrderedList(
                column_list=list(CSV_COLUMNS), meta=m("column_order", "columns are label, pixel1..pixel784 in order")),
        ],
        "rows": [
            E.ExpectTableRowCountToEqual(value=int(params.expected_rows[split]),
                                         meta=m("row_count", f"{params.expected_rows[split]} rows")),
            E.ExpectColumnValuesToBeInSet(column="null_count", value_set=[0],
                                          meta=m("row_nulls", "no null/NaN cell in any row")),
            E.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=N_CLASSES - 1,
                                            meta=m("label_range", "labels in 0..9")),
            E.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=PIXEL_MIN,
                                            meta=m("pixel_min", "every pixel >= 0")),
            E.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=PIXEL_MAX,
                                            meta=m("pixel_max", "every pixel <= 255")),
            E.ExpectColumnValuesToBeInSet(column="non_integer_count", value_set=[0],
                                          meta=m("row_integers", "every cell is an integer")),
        ],
        "per_column": [
            E.ExpectColumnValuesToBeInSet(column="null_count", value_set=[0],
                                          meta=m("column_nulls", "no column holds a null")),
            E.ExpectColumnValuesToBeInSet(column="is_integer", value_set=[True],
                                          meta=m("column_integers", "every column holds integers")),
            E.ExpectColumnValuesToBeBetween(column="min", min_value=PIXEL_MIN, max_value=PIXEL_MAX,
                                            meta=m("column_min", "every column's minimum in 0..255")),
            E.ExpectColumnValuesToBeBetween(column="max", min_value=PIXEL_MIN, max_value=PIXEL_MAX,
                                            meta=m("column_max", "every column's maximum in 0..255")),
        ],
        "classes": [
            E.ExpectColumnValuesToBeBetween(column="count", min_value=1,
                                            meta=m("class_present", "every class 0..9 present")),
            E.ExpectColumnValuesToBeBetween(column="share", min_value=lo, max_value=hi,
                                            meta=m("class_share", f"each class's share in {lo:g}..{hi:g}")),
        ],
        "content": content_rows,
        "drift": drift_checks,
    }


# ------------------------------------------------------------------------------------ GX machinery
def _import_gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


class GxRunner:
    """One ephemeral GX context; each (split, frame) is a suite + validation definition on a pandas batch."""

    DOCS_SITE = "pipeline_docs"

    def __init__(self, docs_dir: Path | None = None):
        gx = _import_gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.datasource = self.context.data_sources.add_pandas("fmnist")
        self.batch_defs: dict[str, Any] = {}
        self.docs_dir = docs_dir
        if docs_dir is not None:
            self.context.add_data_docs_site(site_name=self.DOCS_SITE, site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })

    def _batch_definition(self, frame: str):
        if frame not in self.batch_defs:
            asset = self.datasource.add_dataframe_asset(frame)
            self.batch_defs[frame] = asset.add_batch_definition_whole_dataframe(f"{frame}_all")
        return self.batch_defs[frame]

    def run(self, split: str, frame: str, df, expectations: list, max_examples: int):
        gx = self.gx
        name = f"{split}.{frame}"
        suite = self.context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        vd = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=self._batch_definition(frame), suite=suite))
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": max_examples}
        if frame in INDEX_COLUMN:
            result_format["unexpected_index_column_names"] = [INDEX_COLUMN[frame]]
        return vd.run(batch_parameters={"dataframe": df}, result_format=result_format)

    def build_docs(self) -> None:
        if self.docs_dir is not None:
            self.context.build_data_docs(site_names=[self.DOCS_SITE])


# -------------------------------------------------------------------------------- results -> report
def _plain(value: Any) -> Any:
    """GX/numpy values -> JSON-safe Python values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        if math.isnan(f) or math.isinf(f):
            return None
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)


def _fmt(value: Any) -> str:
    value = _plain(value)
    return "null" if value is None else str(value)


def _indices(result: dict, key: str) -> list:
    return [entry.get(key) for entry in result.get("partial_unexpected_index_list") or []]


def _cells(table: pa.Table, row: int, positions: list[int], predicate) -> list[str]:
    """`name=value` for the cells of `row` (among column positions) that satisfy predicate(value)."""
    hits = []
    for pos in positions:
        value = table.column(pos)[row].as_py()
        if predicate(value):
            hits.append((table.column_names[pos], value))
    return [f"{name}={'null' if v is None else v}" for name, v in hits]


def _is_nullish(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _column_order_detail(actual: list[str]) -> tuple[str, dict]:
    expected = list(CSV_COLUMNS)
    missing = [c for c in expected if c not in actual]
    unexpected = [c for c in actual if c not in expected]
    dupes = sorted({c for c in actual if actual.count(c) > 1})
    parts, detail = [], {"column_count": len(actual)}

    def few(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

    if missing:
        parts.append(f"missing column(s): {few(missing)}")
        detail["missing"] = missing
    if unexpected:
        parts.append(f"unexpected column(s): {few(unexpected)}")
        detail["unexpected"] = unexpected
    if dupes:
        parts.append(f"duplicated column(s): {few(dupes)}")
        detail["duplicated"] = dupes
    if not (missing or unexpected or dupes):
        mismatches = [i for i, (a, e) in enumerate(zip(actual, expected)) if a != e]
        first = mismatches[0]
        parts.append(f"columns out of order: position {first + 1} is {actual[first]}, expected {expected[first]}"
                     + (f" ({len(mismatches)} positions differ)" if len(mismatches) > 1 else ""))
        detail["out_of_order"] = [{"position": i + 1, "found": actual[i], "expected": expected[i]}
                                  for i in mismatches[:5]]
        detail["positions_differing"] = len(mismatches)
    if len(actual) != len(expected):
        parts.append(f"{len(actual)} columns, expected {len(expected)}")
    return "; ".join(parts), detail


def explain(split: str, check: str, result: dict, summ: Summaries, params: ValidateParams) -> tuple[str, Any, list]:
    """(one-line message, observed summary, examples) for a failed expectation."""
    table, frames, k = summ.table, summ.frames, params.max_examples
    per_col = frames["per_column"]
    if check == "column_order":
        msg, detail = _column_order_detail(list(table.column_names))
        return f"{split}: {msg}", detail, detail.get("out_of_order") or detail.get("missing", [])[:k]
    if check == "row_count":
        observed = result.get("observed_value")
        return (f"{split}: {observed} rows, expected {params.expected_rows[split]}",
                {"rows": observed, "expected": params.expected_rows[split]}, [])
    count = result.get("unexpected_count", 0)
    if check == "row_nulls":
        rows = _indices(result, "row")
        null_positions = [int(p) - 1 for p, c in zip(per_col["position"], per_col["null_count"]) if c > 0]
        examples = [{"row": r, "columns": [c.split("=")[0] for c in _cells(table, r, null_positions, _is_nullish)]}
                    for r in rows]
        cells = int(frames["rows"]["null_count"].sum())
        text = "; ".join(f"row {e['row']}, column {', '.join(e['columns'])}" for e in examples)
        return (f"{split}: {cells} null cell(s) in {count} row(s): {text}",
                {"null_cells": cells, "rows_with_nulls": count}, examples)
    if check == "label_range":
        rows = _indices(result, "row")
        labels = frames["rows"]["label"]
        examples = [{"row": r, "label": _plain(labels.iat[r])} for r in rows]
        text = ", ".join(f"row {e['row']} -> {_fmt(e['label'])}" for e in examples)
        return (f"{split}: {count} label value(s) outside 0..{N_CLASSES - 1}: {text}",
                {"unexpected_count": count}, examples)
    if check in ("pixel_min", "pixel_max", "row_integers"):
        rows = _indices(result, "row")
        if check == "row_integers":
            def predicate(v):
                return not _is_nullish(v) and not (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
            what = "row(s) hold non-integer values"
        else:
            def predicate(v):
                return isinstance(v, (int, float)) and not _is_nullish(v) and not PIXEL_MIN <= v <= PIXEL_MAX
            what = f"row(s) hold pixel values outside {PIXEL_MIN}..{PIXEL_MAX}"
        positions = [i for i, name in enumerate(table.column_names) if name != LABEL_COLUMN or check == "row_integers"]
        examples = [{"row": r, "cells": _cells(table, r, positions, predicate)[:k]} for r in rows]
        text = "; ".join(f"row {e['row']}: {', '.join(e['cells'])}" for e in examples)
        return f"{split}: {count} {what}: {text}", {"unexpected_count": count}, examples
    if check in ("column_nulls", "column_integers", "column_min", "column_max"):
        cols = _indices(result, "column")
        by_name = per_col.drop_duplicates("column").set_index("column")
        examples = []
        for c in cols:
            info = by_name.loc[c]
            examples.append({"column": c, "dtype": info["dtype"], "null_count": _plain(info["null_count"]),
                             "min": _plain(info["min"]), "max": _plain(info["max"])})
        if check == "column_nulls":
            text = ", ".join(f"{e['column']} ({e['null_count']} null)" for e in examples)
            return f"{split}: {count} column(s) hold nulls: {text}", {"unexpected_count": count}, examples
        if check == "column_integers":
            text = ", ".join(f"{e['column']} ({e['dtype']})" for e in examples)
            return f"{split}: {count} column(s) are not integer: {text}", {"unexpected_count": count}, examples
        text = ", ".join(f"{e['column']} (min {_fmt(e['min'])}, max {_fmt(e['max'])})" for e in examples)
        return (f"{split}: {count} column(s) with values outside {PIXEL_MIN}..{PIXEL_MAX}: {text}",
                {"unexpected_count": count}, examples)
    if check in ("class_present", "class_share"):
        classes = frames["classes"]
        idx = _indices(result, "class")
        examples = [{"class": int(c), "name": CLASS_NAMES[int(c)], "count": int(classes["count"].iat[int(c)]),
                     "share": round(float(classes["share"].iat[int(c)]), 6)} for c in idx]
        if check == "class_present":
            text = ", ".join(f"'{e['name']}' ({e['class']})" for e in examples)
            return f"{split}: {count} class(es) have no rows: {text}", {"unexpected_count": count}, examples
        lo, hi = share_bounds(params)
        text = "; ".join(f"class '{e['name']}' ({e['class']}) share {e['share']:.3f} ({e['count']} rows)"
                         for e in examples)
        return (f"{split}: {count} class share(s) outside {lo:g}..{hi:g}: {text}",
                {"unexpected_count": count}, examples)
    if check in CONTENT_CHECKS:
        return _explain_content(split, check, result, summ, params)
    if check.startswith("drift_"):
        return _explain_drift(split, check[len("drift_"):], result, summ, params)
    return f"{split}: expectation {check} failed", _plain(result), []


def _explain_content(split: str, check: str, result: dict, summ: Summaries,
                     params: ValidateParams) -> tuple[str, Any, list]:
    frame, k = summ.frames["content"], params.max_examples
    n = len(frame)
    limit = getattr(params, check)
    column, passing, _ = CONTENT_CHECKS[check]
    hit = frame[frame[column] != passing]
    count = len(hit)
    head = (f"{split}: {count} of {n} images ({100 * count / max(n, 1):.2f}%, limit "
            f"{100 * float(limit['max_share']):g}%)")
    rows = hit.head(k)
    if check == "duplicates":
        examples = [{"row": int(r.row), "same_as_row": int(r.duplicate_of)} for r in rows.itertuples()]
        text = ", ".join(f"row {e['row']} = row {e['same_as_row']}" for e in examples)
        msg = f"{head} repeat an earlier image exactly: {text}"
    elif check == "degenerate_images":
        examples = [{"row": int(r.row), "kind": r.degenerate} for r in rows.itertuples()]
        kinds = hit["degenerate"].value_counts()
        msg = (f"{head} are degenerate ({', '.join(f'{c} {kind}' for kind, c in kinds.items())}): "
               + ", ".join(f"row {e['row']} {e['kind']}" for e in examples))
    elif check == "test_in_train":
        examples = [{"row": int(r.row), "train_row": int(r.in_train)} for r in rows.itertuples()]
        msg = (f"{head} are identical to a training image (the test set leaks into training): "
               + ", ".join(f"test row {e['row']} = train row {e['train_row']}" for e in examples))
    else:
        examples = [{"row": int(r.row), "train_row": int(r.near_train), "rms": round(float(r.near_rms), 4)}
                    for r in rows.itertuples()]
        msg = (f"{head} lie within RMS pixel difference {float(limit['max_rms']):g} of a training image: "
               + ", ".join(f"test row {e['row']} ~ train row {e['train_row']} ({e['rms']:.3f})" for e in examples))
    if limit["on_exceed"] == "warn":
        msg += " [warning]"
    return msg, {"unexpected_count": count, "share": count / max(n, 1)}, examples


def _explain_drift(split: str, column: str, result: dict, summ: Summaries,
                   params: ValidateParams) -> tuple[str, Any, list]:
    drift = summ.frames["drift"]
    key, what = DRIFT_STATISTICS[column]
    limit = float(params.drift[key])
    bad = drift[drift[column].notna() & (drift[column] > limit)].sort_values(column, ascending=False)
    examples = [{"class": int(r["class"]), "name": r["name"], column: round(float(r[column]), 4),
                 "looks_like": r["looks_like"]} for _, r in bad.iterrows()]
    shown = examples[:params.max_examples]
    text = "; ".join(f"'{e['name']}' {e[column]:.3f}" for e in shown) + (" ..." if len(examples) > len(shown) else "")
    from pipeline.data.content import LOOKS_LIKE_CLASS

    guesses = sorted({e["looks_like"] for e in examples
                      if e["looks_like"] and not e["looks_like"].startswith(LOOKS_LIKE_CLASS)})
    swapped = [f"'{e['name']}' looks like '{e['looks_like'][len(LOOKS_LIKE_CLASS):]}'" for e in examples
               if e["looks_like"].startswith(LOOKS_LIKE_CLASS)]
    if swapped:
        guesses.append(f"labels permuted ({', '.join(swapped[:3])}{' ...' if len(swapped) > 3 else ''})")
    msg = (f"{split}: {what} above {limit:g} in {len(examples)} of {int(drift[column].notna().sum())} classes "
           f"judged, against the reference profile {params.drift['reference']}: {text}"
           + (f"; the data look like: {'; '.join(guesses)}" if guesses else ""))
    if params.drift["on_exceed"] == "warn":
        msg += " [warning]"
    return msg, {"unexpected_count": len(examples)}, examples


def _observed(result: dict) -> dict:
    if "observed_value" in result:
        value = result["observed_value"]
        if isinstance(value, list) and len(value) > 20:  # the 785 column names: keep the metric file small
            return {"column_count": len(value)}
        return {"observed_value": _plain(value)}
    keys = ("element_count", "unexpected_count", "missing_count")
    return {key: _plain(result[key]) for key in keys if key in result}


@dataclass
class SplitResult:
    split: str
    rows: int
    columns: int
    success: bool
    expectations: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    images: Any = field(default=None, repr=False)   # (N, 784) pixels for the examples grid; not in the report

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "columns": self.columns,
                "expectations_total": len(self.expectations),
                "expectations_failed": sum(not e["success"] for e in self.expectations),
                "summary": self.summary, "failures": self.failures, "warnings": self.warnings,
                "expectations": self.expectations}


def _summary_numbers(summ: Summaries) -> dict[str, Any]:
    rows, classes = summ.frames["rows"], summ.frames["classes"]
    return {
        "null_cells": int(rows["null_count"].sum()),
        "label_min": _plain(rows["label"].min()), "label_max": _plain(rows["label"].max()),
        "pixel_min": _plain(rows["pixel_min"].min()), "pixel_max": _plain(rows["pixel_max"].max()),
        "class_counts": {name: int(c) for name, c in zip(CLASS_NAMES, classes["count"])},
    }


def _validate_one(runner: GxRunner, data: Any, split: str, params: ValidateParams,
                  train_images: np.ndarray | None = None, profile: dict | None = None) -> SplitResult:
    summ = summarise(data)
    content_summary = content_frames(summ, params, train_images, profile)
    expectations = build_expectations(split, params, cross_split=train_images is not None)
    checks: list[dict] = []
    failures: list[str] = []
    warnings: list[str] = []
    for frame, exps in expectations.items():
        validation = runner.run(split, frame, summ.frames[frame], exps, params.max_examples)
        for res in validation.results:
            config, result = res.expectation_config, res.result or {}
            meta = config.meta or {}
            kwargs = {k: _plain(v) for k, v in config.kwargs.items() if k not in ("batch_id", "column_list")}
            severity = str(getattr(config, "severity", "critical") or "critical").split(".")[-1].lower()
            entry = {"name": meta.get("check", config.type), "description": meta.get("description"),
                     "expectation": config.type, "frame": frame, "kwargs": kwargs, "success": bool(res.success),
                     "severity": severity, "observed": _observed(result), "examples": []}
            if res.exception_info and res.exception_info.get("raised_exception"):
                entry["error"] = str(res.exception_info.get("exception_message"))
                failures.append(f"{split}: expectation {entry['name']} could not run: {entry['error']}")
            elif not res.success:
                message, observed, examples = explain(split, entry["name"], result, summ, params)
                entry["observed"].update(_plain(observed) if isinstance(observed, dict) else {"detail": observed})
                entry["examples"] = _plain(examples)
                entry["message"] = message
                (warnings if severity == "warning" else failures).append(message)
            checks.append(entry)
    return SplitResult(split=split, rows=summ.table.num_rows, columns=summ.table.num_columns,
                       success=not failures and all(c["success"] or c["severity"] == "warning" for c in checks),
                       expectations=checks, failures=failures, warnings=warnings,
                       summary={**_summary_numbers(summ), "content": _plain(content_summary)},
                       images=summ.images)


def validate_table(data: Any, split: str, params: ValidateParams | None = None) -> SplitResult:
    """Validate one split's table (pyarrow Table or pandas DataFrame). Pure: writes nothing."""
    params = params or ValidateParams()
    check_params(params, (split,))
    return _validate_one(GxRunner(), data, split, params, profile=load_reference(params))


def validate_tables(tables: Mapping[str, Any], params: ValidateParams | None = None,
                    docs_dir: Path | None = None) -> dict[str, Any]:
    """Validate every split; return the report dict. With docs_dir, GX Data Docs are built there."""
    params = params or ValidateParams()
    check_params(params, tuple(tables))
    profile = load_reference(params)
    runner = GxRunner(docs_dir)
    results: dict[str, SplitResult] = {}
    for split, data in tables.items():
        # The test split is also judged against the training split (leakage), when both are here.
        train_images = results["train"].images if split == "test" and "train" in results else None
        results[split] = _validate_one(runner, data, split, params, train_images, profile)
    runner.build_docs()
    if docs_dir is not None and "test" in results and "train" in results:
        write_examples_grid(results["test"], results["train"], Path(docs_dir) / EXAMPLES_GRID, params.max_examples)
    return make_report(results)


EXAMPLES_GRID = "near_duplicates.png"


def near_duplicates_of(report: Any, split: str = "test") -> dict | None:
    """The near-duplicate measurement of `split` in a gate report (report.json), or None where there is none
    (a report from before the content checks, a skipped check, or a file that is not such a report)."""
    node = report
    for key in ("splits", split, "summary", "content", "near_duplicates"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def load_reference(params: ValidateParams) -> dict:
    """The reference profile; a relative path is looked up in the working directory (the repository root under
    DVC), then beside the installed package, where the shipped profile lives."""
    import pipeline
    from pipeline.data.content import load_profile

    path = Path(params.drift["reference"])
    if not path.is_absolute() and not path.exists():
        installed = Path(pipeline.__file__).resolve().parent.parent / path
        path = installed if installed.exists() else path
    return load_profile(path)


def write_examples_grid(test: SplitResult, train: SplitResult, path: Path, max_pairs: int) -> Path | None:
    """A PNG of the closest test/train pairs (test image left, its training neighbour right, RMS difference
    below), exact copies first. Drawn with Pillow: matplotlib's import alone would cost the gate a second."""
    from PIL import Image, ImageDraw

    if test.images is None or train.images is None:
        return None
    near = [e for e in test.expectations if e["name"] in ("test_in_train", "near_duplicates")]
    pairs = []
    for e in near:
        for ex in e.get("examples") or []:
            pairs.append((ex["row"], ex["train_row"], ex.get("rms", 0.0)))
    if not pairs:   # nothing over a limit: show the closest pairs anyway, so the figure is always there
        closest = test.summary.get("content", {}).get("near_duplicates", {}).get("closest_pairs", [])
        pairs = [(p["row"], p["train_row"], p["rms"]) for p in closest]
    pairs = sorted(dict.fromkeys(pairs), key=lambda p: p[2])[:max(max_pairs, 8)]
    scale, pad, label = 3, 6, 14
    cell = 28 * scale
    width = 2 * cell + 3 * pad
    canvas = Image.new("L", (max(width * max(len(pairs), 1), 200), cell + 2 * pad + label + 16), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 2), "test | nearest training image (RMS pixel difference)" if pairs else
              "no test image lies within the near-duplicate distance of a training image", fill=0)
    for i, (t_row, tr_row, rms) in enumerate(pairs):
        x0 = i * width + pad
        for j, img in enumerate((test.images[t_row], train.images[tr_row])):
            tile = Image.fromarray(img.reshape(28, 28)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x0 + j * (cell + pad), 16 + pad))
        draw.text((x0, 16 + pad + cell + 2), f"t{t_row}/tr{tr_row} {rms:.3f}", fill=0)
    with io.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def render_summary_html(report: dict[str, Any]) -> str:
    """A small self-contained HTML page of the report (GX's Data Docs load their CSS/JS from CDNs,
    so offline they render unstyled; this page needs nothing from the network)."""
    from html import escape

    verdict = "PASSED" if report["success"] else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Fashion-MNIST validation</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        ".ok{color:#1a7f37}.bad{color:#cf222e;font-weight:bold}code{font-size:90%}",
        "</style></head><body>",
        f"<h1>Fashion-MNIST validation: <span class='{'ok' if report['success'] else 'bad'}'>{verdict}</span></h1>",
        f"<p>Great Expectations {escape(str(report['great_expectations']))}. Full GX Data Docs: "
        "<a href='index.html'>index.html</a>. Rows are 0-based positions in the Parquet file.</p>",
    ]
    if report["failures"]:
        parts.append("<ul>" + "".join(f"<li class='bad'>{escape(m)}</li>" for m in report["failures"]) + "</ul>")
    if report.get("warnings"):
        parts.append("<ul>" + "".join(f"<li>warning: {escape(m)}</li>" for m in report["warnings"]) + "</ul>")
    near = near_duplicates_of(report)
    if near:
        parts.append(f"<h2>Train/test near-duplicates</h2><p>{near['count']} test images "
                     f"({100 * near['share']:.2f}%) have a training image within RMS pixel difference "
                     f"{near['max_rms']:g} ({escape(near['method'])}).</p>"
                     f"<img src='{EXAMPLES_GRID}' alt='closest test/train pairs' style='max-width:100%'>")
    for split, res in report["splits"].items():
        passed = res["expectations_total"] - res["expectations_failed"]
        parts.append(f"<h2>{escape(split)}: {res['rows']} rows x {res['columns']} columns, "
                     f"{passed}/{res['expectations_total']} passed</h2>")
        parts.append("<table><tr><th>check</th><th>expectation</th><th>frame</th><th>result</th>"
                     "<th>observed</th><th>examples</th></tr>")
        for e in res["expectations"]:
            cls, word = ("ok", "pass") if e["success"] else ("bad", "FAIL")
            parts.append(
                f"<tr><td>{escape(e['name'])}<br><small>{escape(e.get('description') or '')}</small></td>"
                f"<td><code>{escape(e['expectation'])}</code><br><small>{escape(json.dumps(e['kwargs']))}</small></td>"
                f"<td>{escape(e['frame'])}</td><td class='{cls}'>{word}</td>"
                f"<td><code>{escape(json.dumps(e['observed']))}</code></td>"
                f"<td><code>{escape(json.dumps(e['examples']))}</code></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def make_report(results: Mapping[str, SplitResult]) -> dict[str, Any]:
    import great_expectations as gx

    failures = [msg for r in results.values() for msg in r.failures]
    return {
        "success": all(r.success for r in results.values()),
        "failed_expectations": sum(not e["success"] and e["severity"] != "warning"
                                   for r in results.values() for e in r.expectations),
        "great_expectations": gx.__version__,
        "failures": failures,
        "warnings": [msg for r in results.values() for msg in r.warnings],
        "splits": {split: r.to_dict() for split, r in results.items()},
    }


def read_interim(interim_dir: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, pa.Table]:
    tables = {}
    for split in splits:
        path = Path(interim_dir) / f"{split}.parquet"
        if not path.exists():
            raise PipelineError(f"{path}: file not found", hint="run the ingest stage first (dvc repro ingest)")
        try:
            tables[split] = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise PipelineError(f"{path}: not a readable Parquet file: {exc}",
                                hint="re-run the ingest stage (dvc repro ingest)") from None
    return tables


def validate_dir(interim_dir: Path, params: ValidateParams | None = None, docs_dir: Path | None = None) -> dict:
    """Validate data/interim/{train,test}.parquet; return the report dict (report['success'] is the verdict)."""
    params = params or ValidateParams()
    check_params(params)
    return validate_tables(read_interim(Path(interim_dir)), params, docs_dir)


# ------------------------------------------------------------------------------------------ I/O shell
def failed_paths(report_path: Path, docs_dir: Path) -> tuple[Path, Path]:
    report_path, docs_dir = Path(report_path), Path(docs_dir)
    return report_path.with_name(f"{report_path.stem}.failed.json"), docs_dir.with_name(f"{docs_dir.name}.failed")


def validate(interim_dir: Path, report_path: Path, docs_dir: Path, params: ValidateParams) -> dict:
    """Run the gate and write its outputs; raise ValidationFailed (exit 3) when it rejects the data.

    Success replaces report + docs atomically and removes stale `.failed` outputs; failure writes only
    the `.failed` siblings, leaving the previous good report and docs byte-identical.
    """
    import shutil

    started = time.monotonic()
    check_params(params)
    tables = read_interim(Path(interim_dir))
    failed_report, failed_docs = failed_paths(report_path, docs_dir)
    # Build the docs in a temporary directory; only a passing gate swaps it in for docs_dir.
    staging = Path(docs_dir).with_name(f".{Path(docs_dir).name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        report = validate_tables(tables, params, docs_dir=staging)
        # Bind the verdict to the exact bytes judged: convert refuses Parquet files whose hash differs.
        report["inputs_sha256"] = {split: io.sha256_file(Path(interim_dir) / f"{split}.parquet") for split in tables}
        target_report, target_docs = (report_path, docs_dir) if report["success"] else (failed_report, failed_docs)
        with io.atomic_dir(target_docs) as tmp:
            shutil.rmtree(tmp)
            if staging.is_dir():
                os.replace(staging, tmp)
            else:
                tmp.mkdir()
            (tmp / "summary.html").write_text(render_summary_html(report), encoding="utf-8")
        io.write_json(target_report, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for split, res in report["splits"].items():
        print(f"validate: {split}: {res['rows']} rows, {res['expectations_total'] - res['expectations_failed']}/"
              f"{res['expectations_total']} expectations passed", file=sys.stderr)
        near = near_duplicates_of(report, split)
        if near:
            print(f"validate: {split}: {near['count']} images ({100 * near['share']:.2f}%) have a training image "
                  f"within RMS pixel difference {near['max_rms']:g}", file=sys.stderr)
    for message in report.get("warnings", []):
        print(f"validate: warning: {message}", file=sys.stderr)
    if not report["success"]:
        lines = "\n".join(f"  - {msg}" for msg in report["failures"])
        raise ValidationFailed(
            f"data validation failed: {report['failed_expectations']} expectation(s) not met\n{lines}\n"
            f"  report: {failed_report}\n  data docs: {failed_docs / 'index.html'}"
            + (f"\n  (the previous good {report_path} was left untouched)" if Path(report_path).exists() else ""),
            hint=f"fix the source data (or params.yaml `validate`) and re-run; {ROW_HINT}",
        )
    failed_report.unlink(missing_ok=True)
    shutil.rmtree(failed_docs, ignore_errors=True)
    print(f"validate: report {report_path}, data docs {Path(docs_dir) / 'index.html'} "
          f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return report


def add_cli(parser) -> None:
    parser.add_argument("--interim", type=Path, default=Path("data/interim"),
                        help="directory with {train,test}.parquet")
    parser.add_argument("--report", type=Path, default=Path("data/validation/report.json"),
                        help="JSON report, a DVC metric (failures go to <stem>.failed.json)")
    parser.add_argument("--docs", type=Path, default=Path("data/validation/docs"), help="GX Data Docs HTML directory")


def cli(args) -> None:
    params = section(ValidateParams, "validate", path=args.params)
    validate(args.interim, args.report, args.docs, params)
