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

`python -m pipeline validate` (pipeline/cli.py) runs stage.py's `add_cli` and `cli`. Import names from the module
that defines them; this package re-exports nothing, so each name has one import path. Great Expectations is
imported only when a suite runs (gx_runner), so reading reports (flows/artifacts.py) stays cheap.
"""
