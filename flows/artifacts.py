"""Prefect artifacts of a pipeline run: the stage table, the data-quality gate's summary, the model comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline.data.validate import near_duplicates_of

REPORT = Path("data/validation/report.json")
COMPARISON = Path("reports/comparison.md")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def validation_markdown(workspace: Path) -> str | None:
    """Markdown summary of the newest validation report (a failed gate writes report.failed.json)."""
    report_path = workspace / REPORT
    failed_path = report_path.with_name(f"{report_path.stem}.failed.json")
    candidates = [p for p in (report_path, failed_path) if p.exists()]
    if not candidates:
        return None
    path = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"# Data validation\n\n`{path.relative_to(workspace)}` is unreadable: {exc}\n"
    if not isinstance(report, dict):
        return f"# Data validation\n\n`{path.relative_to(workspace)}` is not a JSON object.\n"
    success = report.get("success")
    verdict = {True: "PASSED", False: "FAILED"}.get(success, "UNKNOWN")
    out = [f"# Data validation: {verdict}", "", f"Report: `{path.relative_to(workspace)}`", ""]
    splits = report.get("splits")
    if isinstance(splits, dict) and splits:
        out += ["| split | success | rows | columns | expectations passed | failures |",
                "|---|---|---|---|---|---|"]
        for name, detail in splits.items():
            detail = detail if isinstance(detail, dict) else {}
            total, failed = detail.get("expectations_total"), detail.get("expectations_failed")
            passed = f"{total - failed}/{total}" if isinstance(total, int) and isinstance(failed, int) else ""
            fails = detail.get("failures") or []
            out.append(f"| {_fmt(name)} | {_fmt(detail.get('success'))} | {_fmt(detail.get('rows'))} | "
                       f"{_fmt(detail.get('columns'))} | {passed} | {len(fails) if isinstance(fails, list) else ''} |")
        out.append("")
    failures = report.get("failures")
    if isinstance(failures, list) and failures:
        out += ["## Failures", ""] + [f"- {_fmt(f)}" for f in failures[:50]] + [""]
    warnings = report.get("warnings")
    if isinstance(warnings, list) and warnings:
        out += ["## Warnings (the data passed)", ""] + [f"- {_fmt(w)}" for w in warnings[:50]] + [""]
    near = near_duplicates_of(report)
    if near and "count" in near:
        out += [f"Train/test near-duplicates: {near['count']} test images ({100 * near.get('share', 0):.2f}%) "
                f"within RMS pixel difference {near.get('max_rms')} of a training image.", ""]
    return "\n".join(out)


def publish_artifacts(workspace: Path, outcomes: list[dict[str, Any]]) -> None:
    log = get_run_logger()
    table = [{"stage": o["stage"], "status": o["status"], "duration_s": o.get("duration_s", "")} for o in outcomes]
    if table:
        create_table_artifact(table=table, key="fmnist-pipeline-stages",
                              description=f"DVC stages of this run ({workspace})")
    md = validation_markdown(workspace)
    if md:
        create_markdown_artifact(markdown=md, key="fmnist-validation", description="Data-quality gate (validate stage)")
    comparison = workspace / COMPARISON
    if comparison.exists():
        create_markdown_artifact(markdown=comparison.read_text(encoding="utf-8", errors="replace"),
                                 key="fmnist-model-comparison", description=str(COMPARISON))
    else:
        log.info("no %s yet: model comparison artifact not published", COMPARISON)
