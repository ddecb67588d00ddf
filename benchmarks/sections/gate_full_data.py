"""Section 7: the data gate on the full train + test data: the whole validate stage as DVC runs it against its
time budget, and, in one process, the gate with vs without its content checks."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.harness import Row, Section, log, median
from flows.dag import outs_dir


def run(workspace: Path, repeats: int, scratch: Path) -> Section:
    """The validate stage on the full train + test Parquet files (70,000 rows): the whole process as DVC runs it
    (imports included), and, in one process side by side, the gate with and without its content checks."""
    import subprocess
    from unittest import mock

    s = Section("gate", "7. data gate, full data (format + content checks)")
    interim = workspace / outs_dir("ingest", workspace)
    if not all((interim / f"{split}.parquet").exists() for split in ("train", "test")):
        s.skipped = f"no {interim}/{{train,test}}.parquet: run `dvc repro ingest` first"
        return s
    whole = []
    for i in range(repeats):
        log(f"gate: whole validate stage, repeat {i + 1}/{repeats}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipeline", "--params", str(workspace / "params.yaml"),
                               "validate", "--interim", str(interim), "--report", str(scratch / "report.json"),
                               "--docs", str(scratch / "docs")], cwd=workspace, capture_output=True, text=True)
        whole.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            s.skipped = f"the gate rejected the data (exit {proc.returncode}): {proc.stderr[-500:]}"
            return s
    from pipeline.data.validate import summaries
    from pipeline.data.validate.gate import validate_tables
    from pipeline.data.validate.stage import read_interim
    from pipeline.params import ValidateParams, section

    tables = read_interim(interim)
    params = section(ValidateParams, "validate", path=workspace / "params.yaml")
    validate_tables(tables, params)             # warm-up: GX import, first context
    with_content, format_only = [], []
    for i in range(repeats):
        log(f"gate: in process with and without content checks, repeat {i + 1}/{repeats}")
        t0 = time.perf_counter()
        validate_tables(tables, params)
        with_content.append(time.perf_counter() - t0)
        with mock.patch.object(summaries, "content_input", lambda summ: None):   # content frames left empty
            t0 = time.perf_counter()
            validate_tables(tables, params)
            format_only.append(time.perf_counter() - t0)
    rows = sum(t.num_rows for t in tables.values())
    s.rows = [
        Row("validate stage, whole process", median(whole), 10.0, "s", "lower", "`python -m pipeline validate`",
            "the 10 s budget", note=f"{rows:,} rows, imports included"),
        Row("gate in one process", median(with_content), median(format_only), "s", "lower",
            "format + content checks", "format checks only"),
    ]
    s.raw = {"rows": rows, "whole_stage_s": whole, "with_content_s": with_content, "format_only_s": format_only}
    s.notes.append("Content checks: exact duplicates by hash, test-in-train leakage, near-duplicates (PCA-filtered "
                   "nearest neighbours, confirmed on all pixels), degenerate images, per-class drift against the "
                   "reference profile (pipeline/data/content.py). 'format checks only' leaves the content frames "
                   "empty (the same GX suite, nothing to judge), so the difference is what the content checks cost.")
    return s
