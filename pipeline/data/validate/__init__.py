"""validate stage: a Great Expectations 1.x suite that is a HARD gate on data/interim/{train,test}.parquet.

The 785-column table is first reduced to small derived frames, and a handful of expectations run on those
(GX costs per expectation, not per row). One module per job:

- summaries.py     the table -> the derived frames (format and content), numpy/pyarrow only
- expectations.py  the GX expectations run on each frame, and the check of params.yaml `validate`
- gx_runner.py     the GX context that runs a suite on a frame and builds the Data Docs
- explanations.py  a failed expectation -> a message naming the offending rows, columns or classes
- gate.py          summaries -> expectations -> GX -> explanations for every split (writes nothing)
- report.py        the JSON report, its HTML summary page and the near-duplicates figure
- stage.py         read data/interim, run the gate, write the outputs (or their `.failed` siblings); the CLI

`python -m pipeline validate` (pipeline/cli.py) uses `add_cli` and `cli`. The names below are re-exported
lazily, so importing this package (flows/artifacts.py reads reports with it) costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module of this package that defines it
_EXPORTS = {
    "summaries": ("Summaries", "summarise", "content_input", "content_frames"),
    "expectations": ("CONTENT_CHECKS", "CONTENT_LIMITS", "DRIFT_STATISTICS", "check_params", "share_bounds",
                     "build_expectations"),
    "gx_runner": ("INDEX_COLUMN", "GxRunner"),
    "explanations": ("explain",),
    "gate": ("validate_table", "validate_tables", "load_reference"),
    "report": ("SplitResult", "EXAMPLES_GRID", "json_safe", "near_duplicates_of", "write_examples_grid",
               "render_summary_html", "make_report"),
    "stage": ("ROW_HINT", "read_interim", "validate_dir", "failed_report_path", "failed_docs_dir", "failed_paths",
              "validate", "add_cli", "cli"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
# Pixel range: defined with the data contract; kept importable from here, where it used to live.
_HOME.update(PIXEL_MIN="pipeline.schema", PIXEL_MAX="pipeline.schema")

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from pipeline.data.validate.expectations import (CONTENT_CHECKS, CONTENT_LIMITS, DRIFT_STATISTICS,
                                                     build_expectations, check_params, share_bounds)
    from pipeline.data.validate.explanations import explain
    from pipeline.data.validate.gate import load_reference, validate_table, validate_tables
    from pipeline.data.validate.gx_runner import INDEX_COLUMN, GxRunner
    from pipeline.data.validate.report import (EXAMPLES_GRID, SplitResult, json_safe, make_report,
                                               near_duplicates_of, render_summary_html, write_examples_grid)
    from pipeline.data.validate.stage import (ROW_HINT, add_cli, cli, failed_docs_dir, failed_paths,
                                              failed_report_path, read_interim, validate, validate_dir)
    from pipeline.data.validate.summaries import Summaries, content_frames, content_input, summarise
    from pipeline.schema import PIXEL_MAX, PIXEL_MIN
