"""`python -m benchmarks`: ours vs an alternative, side by side in one run; a ratio table on stdout,
benchmarks/out/benchmarks.md and benchmarks/out/benchmarks.json (raw figures; --out elsewhere). The committed
copy, docs/results/benchmarks.md, is one run of sections 6,1,2,3,4,5,7 (`make bench BENCH="--end-to-end
--sections 6,1,2,3,4,5,7 --out docs/results"` on a fresh clone: section 6 builds every output the others use).

Sections (default: 1-5 and 7; 6 only with --end-to-end; modules in benchmarks/sections/):
  1 CSV ingest of the full 60k train CSV: read_kaggle_csv vs pandas.read_csv — wall time and peak RSS,
    each measurement in a fresh process
  2 validation of the full train split: our gate vs a naive per-column GX suite (1,570 expectations),
    plus which injected faults each catches on a small slice
  3 training throughput (images/s) of one paper CNN: tf.data vs NumPy input (benchmarks/input_pipeline.py)
  4 inference of the best trained CNN: batch-1 latency and batch-1024 throughput
  5 cached rerun: no-op `python -m flows run` vs no-op `dvc repro` (only when `dvc status` is clean)
  6 end-to-end: per-stage wall times of a full `dvc repro` (forced), behind --end-to-end
  7 the data gate on the full train + test data (70k rows): the whole validate stage against its 10 s budget,
    and the gate with vs without its content checks (duplicates, leakage, near-duplicates, drift)
  8 parallel stages: `python -m flows run` serially vs `--workers 2` on fresh clones, wall time and CPU
    utilisation, plus what 4-16 workers would give (critical path, simulated dispatch); behind --parallel
    (two full runs of the default model set)
  9 serving cnn-ours: batch-1 latency ONNX Runtime vs Keras, and `python -m pipeline serve` (ONNX-backed vs
    --backend keras) at 1, 8 and 32 concurrent loopback clients: requests/s, p50, p99 (~1.5 min; --sections 9)

A section whose inputs are missing is skipped with the reason; one that fails is reported as skipped
with its error. Benchmarks are never part of the test suite. Compare figures from one run only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from flows.runtime import configure_environment  # noqa: E402

configure_environment()   # before the sections import prefect, DVC or TensorFlow
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from benchmarks import harness  # noqa: E402
from benchmarks.sections import (csv_ingest, gate_full_data, gate_vs_naive_gx, inference_speed,  # noqa: E402
                                 noop_rerun, parallel_stages, serving, stage_times, training_throughput)
from pipeline import io  # noqa: E402

TITLES = {"1": "1. CSV ingest (60k train)", "2": "2. validation (60k train)", "3": "3. training throughput",
          "4": "4. inference (best CNN)", "5": "5. cached rerun (no-op)", "6": "6. end-to-end dvc repro per stage",
          "7": "7. data gate, full data (format + content checks)", "8": "8. parallel stages (serial vs workers)",
          "9": "9. serving cnn-ours (ONNX Runtime vs Keras)"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("-n", "--repeats", type=int, default=3, help="repeats per figure (3); the median is reported, "
                   "except in section 3, which counts all timed epochs")
    p.add_argument("--sections", default="1,2,3,4,5,7",
                   help="comma-separated section numbers (default 1,2,3,4,5,7)")
    p.add_argument("--end-to-end", action="store_true", help="also run section 6 (a full forced dvc repro, "
                   "~25 min for the default models on 2 cores)")
    p.add_argument("--parallel", action="store_true", help="also run section 8 (two full flow runs of the default "
                   "models on fresh clones, serial and --workers 2, ~45 min on 2 cores)")
    p.add_argument("--no-force", dest="force", action="store_false",
                   help="section 6: do not force stages (cached stages are then skipped by DVC)")
    p.add_argument("--workspace", type=Path, default=Path.cwd(),
                   help="repository root whose data/, models/ and dvc.yaml are used (default: current directory)")
    p.add_argument("--noop-target", default=None, help="section 5: time the no-op rerun of this stage only")
    p.add_argument("--train-model", default="paper-b-cnn", help="section 3: model (default paper-b-cnn)")
    p.add_argument("--train-images", type=int, default=12000, help="section 3: images per epoch (12000)")
    p.add_argument("--fault-rows", type=int, default=2000, help="section 2: rows of the fault-injection slice")
    p.add_argument("--no-fault-matrix", dest="fault_matrix", action="store_false",
                   help="section 2: skip the injected-fault comparison (saves ~1.5 min)")
    # Not reports/: that is publish's DVC output, which the next `dvc repro` replaces.
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"), help="output directory (default benchmarks/out/)")
    return p


def run_section(key: str, args, scratch: Path) -> harness.Section:
    ws = args.workspace.resolve()
    calls = {
        "1": lambda: csv_ingest.run(ws, args.repeats, scratch),
        "2": lambda: gate_vs_naive_gx.run(ws, args.repeats, args.fault_rows, args.fault_matrix),
        "3": lambda: training_throughput.run(ws, args.repeats, args.train_model, args.train_images),
        "4": lambda: inference_speed.run(ws, args.repeats),
        "5": lambda: noop_rerun.run(ws, args.repeats, args.noop_target),
        "6": lambda: stage_times.run(ws, args.force),
        "7": lambda: gate_full_data.run(ws, args.repeats, scratch),
        "8": lambda: parallel_stages.run(ws, scratch),
        "9": lambda: serving.run(ws, args.repeats, scratch),
    }
    started = time.perf_counter()
    try:
        section = calls[key]()
    except Exception as exc:  # a benchmark must never take the others down with it
        section = harness.Section(key, TITLES[key], skipped=f"failed: {type(exc).__name__}: {exc}")
        section.raw = {"traceback": traceback.format_exc()}
        harness.log(f"section {key} failed:\n{traceback.format_exc()}")
    section.seconds = time.perf_counter() - started
    harness.log(f"section {key} done in {section.seconds:.1f} s" + (f" (skipped: {section.skipped})"
                                                                      if section.skipped else ""))
    return section


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        print("error: --repeats must be >= 1", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.sections.split(",") if k.strip()]
    if args.end_to_end and "6" not in keys:
        keys.append("6")
    if args.parallel and "8" not in keys:
        keys.append("8")
    unknown = [k for k in keys if k not in TITLES]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; valid: 1-9", file=sys.stderr)
        return 2
    if "6" in keys and not args.end_to_end:
        print("error: section 6 re-runs the whole pipeline (~25 min on 2 cores); pass --end-to-end to confirm",
              file=sys.stderr)
        return 2
    if "8" in keys and not args.parallel:
        print("error: section 8 runs the whole pipeline twice (~45 min on 2 cores); pass --parallel to confirm",
              file=sys.stderr)
        return 2
    meta = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "repeats": args.repeats,
            "workspace": str(args.workspace.resolve()), "sections": keys, "environment": harness.environment(),
            "argv": sys.argv[1:] if argv is None else argv}
    scratch = harness.scratch_dir()
    try:
        results = [run_section(k, args, scratch) for k in keys]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta["load_average_at_end"] = os.getloadavg()
    print(harness.render_console(results))
    args.out.mkdir(parents=True, exist_ok=True)
    md, js = args.out / "benchmarks.md", args.out / "benchmarks.json"
    io.write_text(md, harness.render_markdown(results, meta))
    # The stage outputs' one JSON encoder (numbers, NumPy scalars, paths); a datetime goes in as isoformat text.
    io.write_json(js, {"meta": meta, "sections": [s.to_dict() for s in results]})
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
