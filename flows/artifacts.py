"""Prefect artifacts of a pipeline run: the stage table, the data-quality gate's summary, the model comparison.

What renders in the Prefect UI: markdown (its renderer turns `![alt](src)` into `<img src>` as it is, so a
data: URI shows the picture while a relative path such as `figures/x.png` is a broken image, since the UI is
served by the API server, not from the workspace) and tables. So the comparison is published as
- a markdown artifact: reports/comparison.md with every figure embedded as a data: URI (within
  MAX_EMBED_BYTES; a figure over the budget, or missing, becomes a note naming its file), and any other
  relative link replaced by the file's path in the workspace;
- a table artifact: reports/comparison.csv (one row per model: accuracy, CI, published claim, gap, time).
"""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline.data.validate.report import near_duplicates_of
from pipeline.data.validate.stage import failed_report_path

from flows.dag import outs_dir, stage_out

# Where the validate and publish stages write, from dvc.yaml; the file names inside reports/ are publish's.
REPORT = stage_out("validate", "report.json")
COMPARISON = outs_dir("publish") / "comparison.md"
COMPARISON_CSV = COMPARISON.with_suffix(".csv")
COMPARISON_HTML = COMPARISON.with_suffix(".html")
# Figures embedded into one markdown artifact, in bytes of image file (base64 adds a third): the default
# report's figures fit with room to spare; a bigger report names the files it leaves out.
MAX_EMBED_BYTES = 6_000_000
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}
# Columns of comparison.csv shown in the table artifact (in this order, those present); the CSV has them all.
TABLE_COLUMNS = ("rank", "model", "source", "test_accuracy_pct", "ci95_low_pct", "ci95_high_pct",
                 "published_accuracy_pct", "gap_pp", "claim_inside_ci95", "macro_f1", "params_ours",
                 "train_time_s", "epochs", "train_device", "stand_in_for")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(\s*<?([^)\s>]+)>?\s*\)")
_EXTERNAL = ("http://", "https://", "data:", "mailto:", "#")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def validation_markdown(workspace: Path) -> str | None:
    """Markdown summary of the newest validation report (a failed gate writes report.failed.json)."""
    report_path = workspace / REPORT
    failed_path = failed_report_path(report_path)
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


def ui_markdown(markdown: str, base: Path, workspace: Path, budget: int = MAX_EMBED_BYTES) -> str:
    """`markdown` (a file in directory `base`) rewritten so that the Prefect UI renders it: relative images
    become data: URIs while `budget` bytes of image files last, else a note naming the file; other relative
    links become the linked file's path in `workspace` (the UI cannot open files on this machine)."""
    remaining = budget

    def shown(path: Path) -> str:
        try:
            return path.resolve().relative_to(workspace.resolve()).as_posix()
        except ValueError:
            return str(path)

    def image(match: re.Match) -> str:
        nonlocal remaining
        alt, href = match.group(1), match.group(2)
        if href.startswith(_EXTERNAL):
            return match.group(0)
        path = base / href
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None or not path.is_file():
            why = "not an image type the UI shows" if path.is_file() else "missing"
            return f"_[figure: {alt}: `{shown(path)}` ({why})]_"
        size = path.stat().st_size
        if size > remaining:
            return (f"_[figure: {alt}: not embedded ({size / 1e6:.2f} MB would exceed the {budget / 1e6:g} MB of "
                    f"figures one artifact holds); see `{shown(path)}` or `{COMPARISON_HTML.as_posix()}`]_")
        remaining -= size
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{alt}](data:{mime};base64,{data})"

    def link(match: re.Match) -> str:
        text, href = match.group(1), match.group(2)
        if href.startswith(_EXTERNAL):
            return match.group(0)
        return f"{text} (`{shown(base / href)}`)"

    return _LINK.sub(link, _IMAGE.sub(image, markdown))


def comparison_table(workspace: Path) -> list[dict[str, Any]] | None:
    """reports/comparison.csv as table rows (the main columns; numbers rounded for reading), or None."""
    path = workspace / COMPARISON_CSV
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    if not rows:
        return None
    columns = [c for c in TABLE_COLUMNS if c in rows[0]] or list(rows[0])

    def cell(value: str) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value
        return int(number) if number.is_integer() and "." not in value else round(number, 4)

    return [{c: cell(row.get(c, "")) for c in columns} for row in rows]


def publish_artifacts(workspace: Path, outcomes: list[dict[str, Any]]) -> None:
    log = get_run_logger()
    # worker: the Dask worker that ran the stage in a parallel run (flows.parallel); empty for the workspace
    table = [{"stage": o["stage"], "status": o["status"], "duration_s": o.get("duration_s", ""),
              "worker": o.get("worker", "")} for o in outcomes]
    if table:
        create_table_artifact(table=table, key="fmnist-pipeline-stages",
                              description=f"DVC stages of this run ({workspace})")
    md = validation_markdown(workspace)
    if md:
        create_markdown_artifact(markdown=md, key="fmnist-validation", description="Data-quality gate (validate stage)")
    comparison = workspace / COMPARISON
    if comparison.exists():
        markdown = ui_markdown(comparison.read_text(encoding="utf-8", errors="replace"), comparison.parent, workspace)
        create_markdown_artifact(markdown=markdown, key="fmnist-model-comparison",
                                 description=f"{COMPARISON} (figures embedded; also {COMPARISON_HTML})")
    else:
        log.info("no %s yet: model comparison artifact not published", COMPARISON)
    rows = comparison_table(workspace)
    if rows:
        create_table_artifact(table=rows, key="fmnist-model-comparison-table",
                              description=f"{COMPARISON_CSV}: our test accuracy vs the published claim, per model")
