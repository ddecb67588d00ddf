"""Section 6: where a whole pipeline run spends its time: each stage of dvc.yaml reproduced on its own
(`dvc repro --single-item`, forced by default), timed separately. Long: behind --end-to-end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import REPO, Section, log, run_cmd
from flows.dvc_calls import dvc_env, dvc_executable


def run(workspace: Path, force: bool = True) -> Section:
    s = Section("end_to_end", "6. end-to-end dvc repro per stage")
    if not (workspace / "dvc.yaml").exists():
        s.skipped = f"{workspace} has no dvc.yaml"
        return s
    env = dvc_env(pythonpath=REPO)   # stage commands import this checkout's pipeline
    t, rc, out = run_cmd([dvc_executable(), "stage", "list", "--name-only"], workspace, env, timeout=300)
    if rc != 0:
        s.skipped = f"`dvc stage list` failed: {out[-300:]}"
        return s
    stages = [line.strip() for line in out.splitlines() if line.strip()]
    times: dict[str, dict[str, Any]] = {}
    total = 0.0
    for stage in stages:
        args = [dvc_executable(), "repro", "--single-item", *(["--force"] if force else []), stage]
        log(f"end-to-end: {' '.join(args[1:])}")
        t, rc, out = run_cmd(args, workspace, env, timeout=6 * 3600)
        times[stage] = {"wall_s": t, "exit": rc, "ran": "Running stage" in out}
        total += t
        if rc != 0:
            s.notes.append(f"stage {stage} failed (exit {rc}); later stages not run: {out.strip()[-300:]}")
            break
    s.raw = {"stages": times, "total_s": total, "forced": force}
    s.notes.append(f"Stages in dvc.yaml order, each `dvc repro --single-item{' --force' if force else ''} <stage>` "
                   "timed separately (includes ~1 s of DVC overhead per stage). Total "
                   f"{total / 60:.1f} min.")
    s.notes.append("")
    s.notes.append("  | stage | wall time | ran |")
    s.notes.append("  |---|---|---|")
    for stage, r in times.items():
        s.notes.append(f"  | {stage} | {r['wall_s']:.1f} s | {'yes' if r['ran'] else 'cached'} |")
    return s
