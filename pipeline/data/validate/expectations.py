"""Expectations: the Great Expectations suite each split's summary frames are judged by, and its params check.

Each frame gets a handful of expectations (summaries.py says why the frames are small). `meta.check` names
each check in the report; the content and drift checks take their limits and severity from params.yaml
`validate.<check>` (`on_exceed: fail` -> critical, `warn` -> warning: reported, the data pass).
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.params import ValidateParams
from pipeline.schema import CSV_COLUMNS, N_CLASSES, PIXEL_MAX, PIXEL_MIN, SPLITS

# per-image content check -> (its column in the `content` frame, the value of an image that passes, whether it
# compares the test split with the training split); each check's limit is params.yaml `validate.<check>`
CONTENT_CHECKS = {"duplicates": ("duplicate_of", -1, False), "degenerate_images": ("degenerate", "", False),
                  "test_in_train": ("in_train", -1, True), "near_duplicates": ("near_train", -1, True)}
CONTENT_LIMITS = (*CONTENT_CHECKS, "drift")
DRIFT_STATISTICS = {"pixel_js": ("max_pixel_js", "pixel-value histogram Jensen-Shannon distance"),
                    "mean_image_rmse": ("max_mean_image_rmse", "mean-image RMS difference"),
                    "intensity_psi": ("max_intensity_psi", "per-image intensity PSI")}


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
