"""Section 1: reading the full 60k train CSV, read_kaggle_csv (pyarrow, uint8 columns) vs pandas.read_csv
with defaults: wall time and peak memory, each measurement in a fresh process (benchmarks.worker) so that
neither side inherits the other's heap."""

from __future__ import annotations

from pathlib import Path

from benchmarks.data import train_csv
from benchmarks.harness import Row, Section, log, median, run_worker


def run(workspace: Path, repeats: int, scratch: Path) -> Section:
    s = Section("ingest", "1. CSV ingest (60k train)")
    path = train_csv(workspace, scratch)
    samples: dict[str, list[dict]] = {"ours": [], "pandas": []}
    for i in range(repeats):
        # Alternate the order so that neither side always runs on a warmer page cache.
        order = [("ours", "ingest_ours"), ("pandas", "ingest_pandas")]
        for name, task in (order if i % 2 == 0 else order[::-1]):
            log(f"ingest: {name} repeat {i + 1}/{repeats}")
            samples[name].append(run_worker(task, path))
    s.raw = {"csv": str(path), "csv_bytes": path.stat().st_size, "samples": samples}
    ours, pandas = samples["ours"], samples["pandas"]
    for side in (ours, pandas):
        if side[0]["rows"] != 60000 or side[0]["columns"] != 785:
            s.notes.append(f"WARNING: {side[0]['task']} read {side[0]['rows']} x {side[0]['columns']}")

    def m(side, key):
        return median([r[key] for r in side])

    s.rows = [
        Row("read wall time (call only)", m(ours, "seconds"), m(pandas, "seconds"), "s", "lower",
            "read_kaggle_csv", "pandas.read_csv"),
        Row("process wall time (incl. imports)", m(ours, "process_wall_s"), m(pandas, "process_wall_s"), "s",
            "lower", "read_kaggle_csv", "pandas.read_csv"),
        Row("peak RSS (whole process)", m(ours, "process_peak_rss"), m(pandas, "process_peak_rss"), "bytes",
            "lower", "read_kaggle_csv", "pandas.read_csv"),
        Row("peak RSS above post-import baseline",
            m(ours, "process_peak_rss") - m(ours, "rss_after_imports"),
            m(pandas, "process_peak_rss") - m(pandas, "rss_after_imports"), "bytes", "lower",
            "read_kaggle_csv", "pandas.read_csv"),
    ]
    ratio = s.rows[2].ratio
    s.notes += [
        f"CSV {path} ({path.stat().st_size / 1e6:.0f} MB). Each measurement is a fresh `python -m benchmarks.worker` "
        "process; peak RSS is the kernel's ru_maxrss for exactly that child (os.wait4).",
        f"ours: pyarrow CSV reader, every column typed uint8 ({ours[0]['dtype']}); pandas: `pandas.read_csv(path)` "
        f"with defaults ({pandas[0]['dtype']} columns).",
        f"Target: ours' peak memory <= 1/3 of pandas': ratio {ratio:.3f} -> {'MET' if ratio <= 1 / 3 else 'NOT MET'}.",
    ]
    return s
