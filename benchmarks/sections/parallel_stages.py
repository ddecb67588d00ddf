"""Section 8: one pipeline run serially and with `--workers N`, side by side on this machine; and what more
workers could give, computed from the measured stage times and the DAG (its critical path and a simulation of
the flow's dispatch order).

Each run starts from a fresh `git clone` of the repository (committed state) with an empty DVC cache and a
remote of its own, so neither can restore anything from the other's run cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO, Row, Section, log
from flows.dvc_calls import dvc_env, dvc_executable, flow_env

# What the flow logs when a stage ran: "stage 'X' ran in 12.3 s" (in the workspace) or
# "stage 'X' ran on worker W in 12.3 s; outputs pushed" (on a Dask worker).
STAGE_RAN = re.compile(r"stage '([^']+)' (?:ran|restored) (?:on worker (\S+) )?in ([\d.]+) s")
OLDER_RUN = REPO / "docs" / "results" / "16-model-run" / "benchmarks.json"
SIXTEEN = ["cnn-dropout-1", "cnn-dropout-3", "cnn-ours", "svc", "gradient-boosting", "random-forest", "mlp", "knn",
           "logistic-regression", "linear-svc", "sgd", "decision-tree", "perceptron", "passive-aggressive",
           "extra-tree", "gaussian-nb"]


def fresh_clone(dest: Path, remote: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True)
    subprocess.run([dvc_executable(), "remote", "add", "--local", "-f", "-d", "bench", str(remote)], cwd=dest,
                   env=dvc_env(pythonpath=REPO), check=True, capture_output=True)
    return dest


def timed_flow(workspace: Path, workers: int) -> dict[str, Any]:
    """`python -m flows run` (with `--workers N` when N > 1): wall time, machine-wide CPU use, stage times."""
    import psutil

    cmd = [sys.executable, "-m", "flows", "run", "--workspace", str(workspace)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log(f"parallel: {' '.join(cmd[1:])}")
    before = psutil.cpu_times()
    started = time.perf_counter()
    with open(workspace / "flow.log", "w") as out:   # read back for STAGE_RAN: whole lines (flow_env)
        proc = subprocess.run(cmd, cwd=workspace, stdout=out, stderr=subprocess.STDOUT, env=flow_env(pythonpath=REPO),
                              timeout=6 * 3600)
    wall = time.perf_counter() - started
    after = psutil.cpu_times()
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    text = (workspace / "flow.log").read_text(errors="replace")
    stages = {m.group(1): {"seconds": float(m.group(3)), "worker": m.group(2)} for m in STAGE_RAN.finditer(text)}
    return {"workers": workers, "exit": proc.returncode, "wall_s": wall, "cpu_utilisation": 1 - idle / total,
            "stages": stages, "log_tail": text[-2000:] if proc.returncode else ""}


# ------------------------------------------------------------------------------------ what N workers give
def model_dag(models: list[str], seeds: list[int], seconds: dict[str, float]) -> list[tuple[str, tuple, float]]:
    """(stage, upstream, seconds) for a model set and seeds, in dvc.yaml's order and shape (dvc.yaml's matrix
    stages train@<model>-<seed> after split, evaluate@<model>-<seed> after convert and its training)."""
    data = [("fetch", (), seconds["fetch"]), ("ingest", ("fetch",), seconds["ingest"]),
            ("validate", ("ingest",), seconds["validate"]), ("convert", ("ingest", "validate"), seconds["convert"]),
            ("images", ("convert",), seconds.get("images", 0.0)), ("split", ("convert",), seconds["split"])]
    runs = [(m, s) for m in models for s in seeds]
    trains = [(f"train@{m}-{s}", ("split",), seconds[f"train@{m}"]) for m, s in runs]
    evaluates = [(f"evaluate@{m}-{s}", ("convert", f"train@{m}-{s}"), seconds[f"evaluate@{m}"]) for m, s in runs]
    publish = [("publish", tuple(n for n, _, _ in data[2:] + trains + evaluates if n != "images"), seconds["publish"])]
    return data + trains + evaluates + publish


def critical_path(dag: list[tuple[str, tuple, float]]) -> float:
    finish: dict[str, float] = {}
    for name, upstream, secs in dag:
        finish[name] = max((finish[u] for u in upstream), default=0.0) + secs
    return max(finish.values())


def simulate(dag: list[tuple[str, tuple, float]], workers: int, local: set[str]) -> float:
    """Makespan of the flow's dispatch rule: whenever a worker is free, the first ready stage in DAG order;
    `local` stages (fetch, ingest, validate) run in the workspace, one at a time, beside the workers."""
    import heapq

    pending = list(dag)
    done: dict[str, float] = {}
    free_at = [0.0] * workers
    local_free = 0.0
    clock = 0.0
    running: list[tuple[float, str]] = []
    while pending or running:
        progressed = True
        while progressed:
            progressed = False
            for item in list(pending):
                name, upstream, secs = item
                if not all(u in done and done[u] <= clock for u in upstream):
                    continue
                if name in local:
                    if local_free > clock:
                        continue
                    local_free = clock + secs
                    heapq.heappush(running, (local_free, name))
                else:
                    slot = min(range(workers), key=lambda i: free_at[i])
                    if free_at[slot] > clock:
                        continue
                    free_at[slot] = clock + secs
                    heapq.heappush(running, (free_at[slot], name))
                pending.remove(item)
                progressed = True
        if running:
            clock, name = heapq.heappop(running)
            done[name] = clock
    return max(done.values())


def stage_seconds(measured: dict[str, dict[str, Any]]) -> tuple[dict[str, float], list[str]]:
    """Per-stage seconds by stage family and model (train@svc), from this run's serial flow where it trained the
    model, else from the committed 16-model run (docs/results/16-model-run): (seconds, models from there)."""
    seconds = {re.sub(r"-\d+$", "", name): r["seconds"] for name, r in measured.items()}
    older = {}
    if OLDER_RUN.exists():
        for section in json.loads(OLDER_RUN.read_text())["sections"]:
            if section.get("key") == "end_to_end":
                older = {name: r["wall_s"] for name, r in section["raw"]["stages"].items()}
    borrowed = []
    for model in SIXTEEN:
        for family in ("train", "evaluate"):
            key = f"{family}@{model}"
            if key not in seconds and key in older:
                seconds[key] = older[key]
                if model not in borrowed:
                    borrowed.append(model)
    return seconds, borrowed


def run(workspace: Path, scratch: Path, workers: int = 2) -> Section:
    s = Section("parallel", f"8. parallel stages: serial vs --workers {workers} (default model set)")
    runs = {}
    for n in (1, workers):
        clone = fresh_clone(scratch / f"clone-{n}", scratch / f"remote-{n}")
        runs[n] = timed_flow(clone, n)
        if runs[n]["exit"] != 0:
            s.skipped = f"the flow with {n} worker(s) failed (exit {runs[n]['exit']}): {runs[n]['log_tail'][-600:]}"
            s.raw = {"runs": runs}
            return s
    serial, par = runs[1], runs[workers]
    s.rows = [
        Row("whole pipeline, wall time", par["wall_s"], serial["wall_s"], "s", "lower",
            f"--workers {workers}", "serial (one stage at a time)"),
        Row("CPU utilisation (all cores)", 100 * par["cpu_utilisation"], 100 * serial["cpu_utilisation"], "%",
            "higher", f"--workers {workers}", "serial"),
    ]
    seconds, borrowed = stage_seconds(serial["stages"])
    local = {"fetch", "ingest", "validate"}
    from pipeline.params import load_params

    params = load_params(REPO / "params.yaml")
    default = list(params["train"]["models"])
    projections = []
    for label, models, seeds in (("default set, 1 seed", default, [42]), ("16-model set, 3 seeds", SIXTEEN,
                                                                            [42, 43, 44])):
        dag = model_dag(models, seeds, seconds)
        work = sum(secs for _, _, secs in dag)
        path = critical_path(dag)
        row = {"set": label, "stages": len(dag), "work_s": work, "critical_path_s": path,
               "by_workers": {n: simulate(dag, n, local) for n in (1, 2, 4, 8, 16)}}
        projections.append(row)
    s.raw = {"runs": runs, "stage_seconds": seconds, "borrowed_from_16_model_run": borrowed,
             "projections": projections}
    s.notes.append(f"Both runs: `python -m flows run` on a fresh clone (empty DVC cache, a remote of its own), one "
                   f"after the other on this {os.cpu_count()}-core machine. CPU utilisation: busy share of all cores "
                   "over the run (psutil).")
    s.notes.append("")
    s.notes.append("What N workers would give, from the serial run's stage times (each worker as fast as this "
                   "machine running one stage; coordination overhead not included):")
    s.notes.append("")
    s.notes.append("  | model set | stages | total work | critical path | 1 | 2 | 4 | 8 | 16 workers |")
    s.notes.append("  |---|---|---|---|---|---|---|---|---|")
    for p in projections:
        cells = " | ".join(f"{p['by_workers'][n] / 60:.1f} min" for n in (1, 2, 4, 8, 16))
        s.notes.append(f"  | {p['set']} | {p['stages']} | {p['work_s'] / 60:.1f} min | "
                       f"{p['critical_path_s'] / 60:.1f} min | {cells} |")
    if borrowed:
        s.notes.append("")
        s.notes.append(f"Stage times of {', '.join(borrowed)} (not in the default set) come from the committed "
                       "16-model run (docs/results/16-model-run/benchmarks.json), measured on a machine of this "
                       "kind with older code.")
    return s
