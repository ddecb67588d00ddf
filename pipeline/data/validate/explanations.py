"""Failure explanations: a failed expectation -> one line naming what is wrong, where, with examples.

GX reports which rows/columns/classes of a summary frame failed; this goes back to the table to name the
offending cells (`row 17, column pixel200`), so the message says exactly what to fix.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from pipeline.data.content import CAUSES, UNKNOWN
from pipeline.data.validate.expectations import CONTENT_CHECKS, DRIFT_STATISTICS, share_bounds
from pipeline.data.validate.report import json_safe
from pipeline.data.validate.summaries import Summaries
from pipeline.params import ValidateParams
from pipeline.schema import CLASS_NAMES, CSV_COLUMNS, LABEL_COLUMN, N_CLASSES, PIXEL_MAX, PIXEL_MIN, header_diff


def _fmt(value: Any) -> str:
    value = json_safe(value)
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
    """The wrong-header diagnosis (schema.header_diff) worded for the report, with the first misplaced columns."""
    expected = list(CSV_COLUMNS)
    diff = header_diff(actual)
    missing, unexpected, dupes = diff.missing, diff.unexpected, diff.duplicated
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
    if diff.is_permutation:
        mismatches = diff.misplaced
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
        examples = [{"row": r, "label": json_safe(labels.iat[r])} for r in rows]
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
            examples.append({"column": c, "dtype": info["dtype"], "null_count": json_safe(info["null_count"]),
                             "min": json_safe(info["min"]), "max": json_safe(info["max"])})
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
    return f"{split}: expectation {check} failed", json_safe(result), []


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
    diagnosis = summ.diagnosis or {}      # a cause is named only where content.diagnose found one that fits
    cause = f"the data look like: {diagnosis['message']}" if diagnosis.get("cause") in CAUSES else UNKNOWN
    msg = (f"{split}: {what} above {limit:g} in {len(examples)} of {int(drift[column].notna().sum())} classes "
           f"judged, against the reference profile {params.drift['reference']}: {text}; {cause}")
    if params.drift["on_exceed"] == "warn":
        msg += " [warning]"
    return msg, {"unexpected_count": len(examples)}, examples
