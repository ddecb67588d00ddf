"""One measured task in a fresh process: `python -m benchmarks.worker TASK PATH`.

Prints one JSON line: the task's own wall time (`seconds`, the call only, imports excluded), the
process's peak RSS after imports (`rss_after_imports`) and at the end (`peak_rss`), both from
getrusage(RUSAGE_SELF) in bytes. The parent also reads the whole process's peak RSS with wait4().
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def ingest_ours(path: str):
    from pipeline.data.ingest import read_kaggle_csv

    def run():
        table = read_kaggle_csv(path)
        return table.num_rows, table.num_columns, str(table.schema.field(1).type)
    return run


def ingest_pandas(path: str):
    import pandas as pd

    def run():
        df = pd.read_csv(path)
        return len(df), df.shape[1], str(df.dtypes.iloc[1])
    return run


TASKS = {"ingest_ours": ingest_ours, "ingest_pandas": ingest_pandas}


def main(argv: list[str]) -> int:
    task, path = argv
    run = TASKS[task](path)
    after_imports = _peak_rss()
    started = time.perf_counter()
    rows, cols, dtype = run()
    seconds = time.perf_counter() - started
    print(json.dumps({"task": task, "seconds": seconds, "rows": rows, "columns": cols, "dtype": dtype,
                      "rss_after_imports": after_imports, "peak_rss": _peak_rss()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
