"""The validate stage's I/O and CLI: read data/interim, run the gate, write the report and Data Docs.

On success the report and docs replace the previous ones atomically. On failure they go to
`<report stem>.failed.json` and `<docs>.failed` (failed_paths), so the previous good outputs stay
byte-identical, and ValidationFailed (exit code 3) names each failed expectation with examples.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.data.validate.expectations import check_params
from pipeline.data.validate.gate import validate_tables
from pipeline.data.validate.report import near_duplicates_of, render_summary_html
from pipeline.errors import PipelineError, ValidationFailed
from pipeline.params import ValidateParams, section
from pipeline.schema import SPLITS

ROW_HINT = "rows are 0-based positions in the Parquet file (= CSV line - 2)"


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


def validate_dir(interim_dir: Path, params: ValidateParams, docs_dir: Path | None = None) -> dict:
    """Validate data/interim/{train,test}.parquet; return the report dict (report['success'] is the verdict)."""
    check_params(params)
    return validate_tables(read_interim(Path(interim_dir)), params, docs_dir)


def failed_report_path(report_path: Path) -> Path:
    """Where a rejected run writes its report: `<stem>.failed.json` beside the good one, which it leaves alone.
    The one place this name is made: readers of the newest verdict (flows/artifacts.py) look here too."""
    report_path = Path(report_path)
    return report_path.with_name(f"{report_path.stem}.failed.json")


def failed_docs_dir(docs_dir: Path) -> Path:
    """Where a rejected run writes its Data Docs: `<docs>.failed` beside the good docs."""
    docs_dir = Path(docs_dir)
    return docs_dir.with_name(f"{docs_dir.name}.failed")


def failed_paths(report_path: Path, docs_dir: Path) -> tuple[Path, Path]:
    return failed_report_path(report_path), failed_docs_dir(docs_dir)


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
    parser.add_argument("--interim", type=Path, required=True,
                        help="directory with {train,test}.parquet")
    parser.add_argument("--report", type=Path, required=True,
                        help="JSON report, a DVC metric (failures go to <stem>.failed.json)")
    parser.add_argument("--docs", type=Path, required=True, help="GX Data Docs HTML directory")


def cli(args) -> None:
    params = section(ValidateParams, "validate", path=args.params)
    validate(args.interim, args.report, args.docs, params)
