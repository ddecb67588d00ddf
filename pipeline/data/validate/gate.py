"""The gate: summarise each split, run its expectations in GX, explain each failure, collect the results.

Pure: nothing here writes outputs (stage.py does). The test split is also judged against the training split
(leakage) when both are validated together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

import pipeline
from pipeline.data.content import load_profile
from pipeline.data.validate.expectations import build_expectations, check_params
from pipeline.data.validate.explanations import explain
from pipeline.data.validate.gx_runner import GxRunner
from pipeline.data.validate.report import EXAMPLES_GRID, SplitResult, json_safe, make_report, write_examples_grid
from pipeline.data.validate.summaries import Summaries, content_frames, summarise
from pipeline.params import ValidateParams
from pipeline.schema import CLASS_NAMES


def _observed(result: dict) -> dict:
    if "observed_value" in result:
        value = result["observed_value"]
        if isinstance(value, list) and len(value) > 20:  # the 785 column names: keep the metric file small
            return {"column_count": len(value)}
        return {"observed_value": json_safe(value)}
    keys = ("element_count", "unexpected_count", "missing_count")
    return {key: json_safe(result[key]) for key in keys if key in result}


def _summary_numbers(summ: Summaries) -> dict[str, Any]:
    rows, classes = summ.frames["rows"], summ.frames["classes"]
    return {
        "null_cells": int(rows["null_count"].sum()),
        "label_min": json_safe(rows["label"].min()), "label_max": json_safe(rows["label"].max()),
        "pixel_min": json_safe(rows["pixel_min"].min()), "pixel_max": json_safe(rows["pixel_max"].max()),
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
            kwargs = {k: json_safe(v) for k, v in config.kwargs.items() if k not in ("batch_id", "column_list")}
            severity = str(getattr(config, "severity", "critical") or "critical").split(".")[-1].lower()
            entry = {"name": meta.get("check", config.type), "description": meta.get("description"),
                     "expectation": config.type, "frame": frame, "kwargs": kwargs, "success": bool(res.success),
                     "severity": severity, "observed": _observed(result), "examples": []}
            if res.exception_info and res.exception_info.get("raised_exception"):
                entry["error"] = str(res.exception_info.get("exception_message"))
                failures.append(f"{split}: expectation {entry['name']} could not run: {entry['error']}")
            elif not res.success:
                message, observed, examples = explain(split, entry["name"], result, summ, params)
                entry["observed"].update(json_safe(observed) if isinstance(observed, dict) else {"detail": observed})
                entry["examples"] = json_safe(examples)
                entry["message"] = message
                (warnings if severity == "warning" else failures).append(message)
            checks.append(entry)
    return SplitResult(split=split, rows=summ.table.num_rows, columns=summ.table.num_columns,
                       success=not failures and all(c["success"] or c["severity"] == "warning" for c in checks),
                       expectations=checks, failures=failures, warnings=warnings,
                       summary={**_summary_numbers(summ), "content": json_safe(content_summary)},
                       images=summ.images)


def validate_table(data: Any, split: str, params: ValidateParams) -> SplitResult:
    """Validate one split's table (pyarrow Table or pandas DataFrame). Pure: writes nothing."""
    check_params(params, (split,))
    return _validate_one(GxRunner(), data, split, params, profile=load_reference(params))


def validate_tables(tables: Mapping[str, Any], params: ValidateParams,
                    docs_dir: Path | None = None) -> dict[str, Any]:
    """Validate every split; return the report dict. With docs_dir, GX Data Docs are built there."""
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


def load_reference(params: ValidateParams) -> dict:
    """The reference profile; a relative path is looked up in the working directory (the repository root under
    DVC), then beside the installed package, where the shipped profile lives."""
    path = Path(params.drift["reference"])
    if not path.is_absolute() and not path.exists():
        installed = Path(pipeline.__file__).resolve().parent.parent / path
        path = installed if installed.exists() else path
    return load_profile(path)
