"""The pipeline flow: one Prefect task per DVC stage (read from dvc.yaml), run in dependency order via DVC.

Each task runs `dvc repro --single-item <stage>` in the workspace, so DVC decides what is cached;
a stage DVC skips ends in a Completed state named "Cached". One `dvc status` call up front spares the
per-stage DVC call for stages DVC already reports up to date and whose upstream stages did not run: a no-op
flow run costs one DVC call, not one per stage.
By default stages run one after another, under a process-wide lock and a workspace lock file (DVC cannot
run two stages in one checkout); with `workers` > 1 or a `dask_address`, independent stages run at the
same time on Dask workers, each in a clone of its own (flows.parallel). Which failures are retried, and the
data gate's terminal exit 3: flows.failures (a timeout comes from params.yaml `orchestration.stage_timeout_s`).
Artifacts (validation summary, model comparison, run summary): flows.artifacts.
Not about when to run: see flows.watcher and flows.deployments.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Completed

from pipeline.io import workspace_lock
from pipeline.params import OrchestrationParams, section

from flows import STATE_DIR, fingerprint
from flows.artifacts import publish_artifacts
from flows.dag import Stage, load_stages
from flows.dvc_env import dvc_env, dvc_executable
from flows.failures import ValidationGateFailed, raise_for_failure, retry_if_transient

_DVC_LOCK = threading.Lock()   # one DVC call at a time in this process, whatever the task runner
RUNNING_GROUPS: set[int] = set()   # process groups of the DVC commands running now (flows.parallel stops them)


@dataclass
class StageOutcome:
    stage: str
    status: str          # "ran" | "restored" (from DVC's run cache) | "cached"
    duration_s: float
    returncode: int = 0


# ---------------------------------------------------------------------------------------------- DVC
def _clean(line: str) -> str:
    return line.rstrip("\n").split("\r")[-1].rstrip()   # keep only the final state of progress-bar lines


# DVC's git/push reminders after every stage: noise in a flow's logs.
_DVC_HINTS = ("To track the changes with git", "git add ", "To enable auto staging", "dvc config core.autostage",
              "Use `dvc push`")


def _level(line: str) -> int:
    import logging

    stripped = line.strip()
    if stripped.startswith(_DVC_HINTS):
        return logging.DEBUG
    if re.match(r"(error \[[\w@.-]+\]:|ERROR:)", stripped):
        return logging.ERROR
    return logging.INFO


def run_dvc(workspace: Path, args: list[str], log=None, timeout_s: float | None = None,
            env: dict[str, str] | None = None, finish_on_interrupt: bool = False,
            exclusive: bool = True) -> tuple[int, list[str], bool]:
    """Run `dvc <args>` in `workspace`, streaming its output lines to `log`: (exit code, lines, timed out?).

    exclusive: one DVC call at a time in this process (a workspace takes one DVC command at a time; a Dask
    worker running stages in separate directories passes False). The command gets its own process group, so that a timeout stops
    DVC and the stage command it started together. On Ctrl-C (KeyboardInterrupt here) the group gets SIGINT
    (DVC stops the stage command and records nothing) and is waited for; with `finish_on_interrupt` (a short
    bookkeeping call such as recording a finished stage) it is left to finish instead, so that no stage is
    half-recorded. Either way the interrupt is re-raised.
    """
    lines: list[str] = []
    timed_out = threading.Event()
    with _DVC_LOCK if exclusive else contextlib.nullcontext():
        proc = subprocess.Popen([dvc_executable(), *args], cwd=workspace, env=env or dvc_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace", start_new_session=True)
        RUNNING_GROUPS.add(proc.pid)
        timer = None
        if timeout_s:
            def stop() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            timer = threading.Timer(timeout_s, stop)
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = _clean(raw)
                if not line:
                    continue
                lines.append(line)
                if log is not None:
                    log.log(_level(line), line)
            returncode = proc.wait()
        except KeyboardInterrupt:
            if not finish_on_interrupt:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
        finally:
            RUNNING_GROUPS.discard(proc.pid)
            if timer is not None:
                timer.cancel()
    return returncode, lines, timed_out.is_set()


def repro_status(stage: str, lines: list[str]) -> str:
    """What `dvc repro` did with `stage`: "ran", "restored" (from DVC's run cache) or "cached" (unchanged)."""
    text = "\n".join(lines)
    if re.search(rf"Running stage '{re.escape(stage)}'", text):
        return "ran"
    if re.search(rf"Stage '{re.escape(stage)}' is cached - skipping run", text):
        return "restored"
    if re.search(rf"Stage '{re.escape(stage)}' didn't change, skipping", text):
        return "cached"
    return "ran"


def run_dvc_stage(workspace: Path, stage: str, log=None, force: bool = False, timeout_s: float | None = None,
                  pull: bool = False, env: dict[str, str] | None = None, finish_on_interrupt: bool = False,
                  exclusive: bool = True) -> tuple[int, str, list[str]]:
    """Run `dvc repro --single-item <stage>` in `workspace`; stream its output lines to `log`.

    Returns (exit code, "ran" | "restored" | "cached" | "timed out", output lines): "restored" when DVC's run
    cache held an earlier run with the same inputs and checked its outputs out instead of running the command.
    pull: `--pull`, i.e. also look for that earlier run (and its outputs) on the default DVC remote.
    """
    args = ["repro", "--single-item", stage] + (["--force"] if force else []) + (["--pull"] if pull else [])
    returncode, lines, timed_out = run_dvc(workspace, args, log=log, timeout_s=timeout_s, env=env,
                                           finish_on_interrupt=finish_on_interrupt, exclusive=exclusive)
    if timed_out:
        return returncode, "timed out", lines
    return returncode, repro_status(stage, lines), lines


def stale_stages(workspace: Path) -> set[str] | None:
    """Stages `dvc status` reports as changed (deps, params, code or outputs differ from dvc.lock).

    None when DVC cannot tell (non-zero exit, unparsable output): every stage then goes through
    `dvc repro`, which is always correct, only slower.
    """
    with _DVC_LOCK:
        proc = subprocess.run([dvc_executable(), "status", "--json"], cwd=workspace, env=dvc_env(),
                              capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        return None
    try:
        report = json.loads(proc.stdout.strip() or "{}")
    except json.JSONDecodeError:
        return None
    return {name.rsplit(":", 1)[-1] for name in report} if isinstance(report, dict) else None


# ---------------------------------------------------------------------------------------------- task
@task(name="dvc-stage", retry_condition_fn=retry_if_transient, persist_result=False)
def run_stage(workspace: str, stage: str, force: bool = False, up_to_date: bool = False,
              timeout_s: float | None = None):
    """One DVC stage. Completed ("Cached" when DVC skipped it), or Failed with the stage's own error.

    up_to_date: `dvc status` found this stage and all its upstream stages unchanged at the start of
    the run; the `dvc repro` call (which would skip it) is then spared.
    """
    log = get_run_logger()
    if up_to_date:   # the flow never sets it under --force (no dvc status then)
        outcome = StageOutcome(stage=stage, status="cached", duration_s=0.0)
        log.info("stage '%s' is up to date (dvc status): skipped", stage)
        return Completed(name="Cached", message=f"dvc status: stage '{stage}' is up to date, skipped",
                         data=asdict(outcome))
    started = time.monotonic()
    returncode, status, lines = run_dvc_stage(Path(workspace), stage, log=log, force=force, timeout_s=timeout_s)
    duration = round(time.monotonic() - started, 2)
    raise_for_failure(stage, returncode, status, lines, timeout_s, log)
    outcome = StageOutcome(stage=stage, status=status, duration_s=duration)
    if status == "cached":
        log.info("stage '%s' is up to date in the DVC cache: skipped (%.1f s)", stage, duration)
        return Completed(name="Cached", message=f"DVC: stage '{stage}' didn't change, skipped", data=asdict(outcome))
    if status == "restored":
        log.info("stage '%s' restored from DVC's run cache, nothing run (%.1f s)", stage, duration)
        return Completed(name="Cached", message=f"DVC: stage '{stage}' restored from the run cache",
                         data=asdict(outcome))
    log.info("stage '%s' ran in %.1f s", stage, duration)
    return Completed(message=f"DVC: stage '{stage}' ran in {duration:.1f} s", data=asdict(outcome))


# ---------------------------------------------------------------------------------------------- flow
@flow(name="fmnist-pipeline", log_prints=True)
def pipeline_flow(workspace: str | None = None, targets: list[str] | None = None, retries: int = 2,
                  retry_delay_s: float = 5.0, force: bool = False, workers: int = 1,
                  dask_address: str | None = None) -> list[dict[str, Any]]:
    """Run the workspace's DVC pipeline, one task per stage in dependency order.

    workspace: repository root holding dvc.yaml (default: current directory).
    targets: run only these stages and what they depend on (default: every stage).
    retries / retry_delay_s: for failures that can be transient (classify_failure); bad input, the data gate,
        an exception in stage code and a timeout are never retried.
    force: pass --force to dvc repro (re-run even cached stages).
    workers / dask_address: run independent stages at the same time on a Dask cluster (flows.parallel):
        a local one of `workers` processes, or the scheduler at `dask_address`. workers=1 without an
        address runs one stage at a time in the workspace.
    """
    log = get_run_logger()
    ws = Path(workspace or os.getcwd()).resolve()
    stages: list[Stage] = load_stages(ws, targets)
    orchestration = section(OrchestrationParams, "orchestration", path=ws / "params.yaml")
    log.info("workspace %s: %d stage(s) from dvc.yaml in order: %s", ws, len(stages), ", ".join(s.name for s in stages))
    state = fingerprint.load_state(ws)
    try:
        source_fp = fingerprint.compute(ws, state.get("last_seen"))
    except Exception as exc:   # the fingerprint only feeds the watcher; never block a run on it
        log.warning("could not fingerprint the data source: %s", exc)
        source_fp = None

    (ws / STATE_DIR).mkdir(exist_ok=True)
    with workspace_lock(ws, f"{STATE_DIR}/run.lock"):
        stale = None if force else stale_stages(ws)
        if stale is not None:
            log.info("dvc status: %d stage(s) changed%s", len(stale), f": {', '.join(sorted(stale))}" if stale else "")
        from flows.parallel import dask_task_runner   # (these import this module)
        from flows.scheduler import run_stages

        parallel = workers > 1 or bool(dask_address)
        with dask_task_runner(workers, dask_address) if parallel else contextlib.nullcontext() as runner:
            outcomes, failure = run_stages(ws, stages, runner, stale=stale, force=force, orchestration=orchestration,
                                           retries=retries, retry_delay_s=retry_delay_s, log=log)
        publish_artifacts(ws, outcomes)
    if failure is not None:
        if isinstance(failure, ValidationGateFailed):
            log.error("pipeline stopped by the data-quality gate:\n%s", failure.reason)
        raise failure
    # Only a run that reached the end of the DAG has processed the data; a partial run (--target validate)
    # must not tell the watcher that this data source is done.
    whole_dag = not targets or {s.name for s in stages} >= {s.name for s in load_stages(ws)}
    if source_fp is not None and whole_dag:
        fingerprint.save_state(ws, last_success=source_fp, last_seen=source_fp)
        log.info("recorded data-source fingerprint %s… as processed", source_fp["digest"][:12])
    elif source_fp is not None:
        log.info("partial run (targets %s): the data source is not recorded as processed", ", ".join(targets))
    return outcomes
