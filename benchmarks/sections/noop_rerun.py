"""Section 5: the orchestration overhead on a workspace where nothing changed: a no-op `python -m flows run`
vs a no-op `dvc repro` (measured only when `dvc status` is clean)."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.harness import REPO, Row, Section, log, median, run_cmd
from flows.dvc_calls import dvc_env, dvc_executable


def run(workspace: Path, repeats: int, target: str | None = None) -> Section:
    s = Section("cached", "5. cached rerun (no-op)")
    if not (workspace / "dvc.yaml").exists():
        s.skipped = f"{workspace} has no dvc.yaml"
        return s
    env = dvc_env(pythonpath=REPO)   # stage commands import this checkout's pipeline
    targets = [target] if target else []
    wall, rc, out = run_cmd([dvc_executable(), "status", "--with-deps", *targets], workspace, env, timeout=300)
    if rc != 0 or "up to date" not in out:
        s.skipped = (f"`dvc status {' '.join(targets)}` in {workspace} is not clean (data/models not built yet); "
                     "run `dvc repro` first, or pass --workspace / --noop-target")
        s.raw = {"dvc_status": out[-2000:]}
        return s
    dvc_times, flow_times, notes = [], [], []
    for i in range(repeats):
        log(f"cached: dvc repro {' '.join(targets)} (no-op) {i + 1}/{repeats}")
        t, rc, out = run_cmd([dvc_executable(), "repro", *targets], workspace, env, timeout=600)
        if rc != 0 or "Running stage" in out:
            s.skipped = f"`dvc repro` was not a no-op (exit {rc}): {out[-300:]}"
            return s
        dvc_times.append(t)
    s.raw["dvc_repro_noop_s"] = dvc_times
    flows_main = REPO / "flows" / "__main__.py"
    if flows_main.exists():
        flow_args = [sys.executable, "-m", "flows", "run", "--workspace", str(workspace)]
        for t in targets:
            flow_args += ["--target", t]
        for i in range(repeats):
            log(f"cached: python -m flows run (no-op) {i + 1}/{repeats}")
            t, rc, out = run_cmd(flow_args, workspace, env, timeout=900)
            if rc != 0:
                notes.append(f"`python -m flows run` failed (exit {rc}): {out.strip()[-300:]}")
                break
            flow_times.append(t)
        s.raw["flow_run_noop_s"] = flow_times
    else:
        notes.append("flows/ (Prefect) not present: flow no-op not measured")
    if flow_times:
        s.rows = [Row("no-op rerun wall time", median(flow_times), median(dvc_times), "s", "lower",
                      "python -m flows run (Prefect)", "dvc repro")]
    else:
        s.rows = [Row("no-op rerun wall time", median(dvc_times), 0.0, "s", "lower",
                      "dvc repro", "(Prefect flow not measured)")]
    s.notes += [f"Workspace {workspace}{', target ' + target if target else ''}: `dvc status` clean before timing.",
                "Prefect flow time includes starting its ephemeral API server (a fresh process each run) and one "
                "`dvc repro --single-item` per stage; the ratio is the orchestration overhead over plain DVC."] + notes
    return s
