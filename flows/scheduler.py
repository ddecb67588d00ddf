"""The stage loop of a pipeline run: which stage runs when, where, and what its outcome is.

Stages come in topological order (flows.dag). Without a Dask task runner each runs in the workspace, one after
another; with one, stages that DVC's run cache can record (Stage.portable) go to Dask workers as soon as every
stage they depend on is recorded, and are recorded in the workspace when they finish (flows.parallel).
A failed stage stops only the stages downstream of it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Completed

from flows.dag import Stage
from flows.dvc_calls import run_dvc, run_dvc_stage
from flows.failures import failed_status, failure_of, raise_for_failure, retry_if_transient, step_failed
from flows.parallel import (cluster_shape, default_remote_url, run_stage_on_worker, stage_resources,
                            stop_stage_processes, take_snapshot, wants_gpu)


@dataclass
class StageOutcome:
    stage: str
    status: str          # "ran" | "restored" (from DVC's run cache) | "cached"
    duration_s: float
    returncode: int = 0


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


def _final_state(future):
    """The Prefect state a finished Dask future carries (prefect-dask submits with return_type="state")."""
    return future.wrapped_future.result()


def run_stages(ws: Path, stages: list[Stage], runner, *, stale: set[str] | None, force: bool, orchestration,
               retries: int, retry_delay_s: float, log) -> tuple[list[dict[str, Any]], BaseException | None]:
    """Run `stages` (topological order): with a Dask `runner`, independent portable ones at once on its
    cluster; without one (runner None), one at a time in the workspace, in order.

    Returns (outcomes in DAG order, the first failure or None). A failed stage stops only what depends on it;
    the data gate's exit 3 therefore stops everything (all later stages depend on validate). On Ctrl-C the
    workers' DVC commands are stopped, nothing more is recorded, and the interrupt propagates: the next run
    starts from what dvc.lock holds.
    """
    local_only: set[str] = set()      # portable, but an input of theirs would be missing on a worker
    if runner is not None:
        remote_url = default_remote_url(ws)
        snapshot = take_snapshot(ws)
        client = runner.client
        shape = cluster_shape(client)
        log.info("parallel run on %d Dask worker(s) (%s); stage outputs travel through the DVC remote %s; "
                 "workspace sources: %d files, %.1f MiB", shape.workers, client.scheduler.address, remote_url,
                 snapshot.files, len(snapshot.archive) / 2**20)
        record_files = sorted({s.record_file for s in stages})
        for stage in (s for s in stages if s.portable):
            # Inputs git ignores and no stage writes would be missing from a worker's clone. A stage that reads
            # uncached outputs of such a stage stays here too: `dvc push` cannot send them to a worker.
            missing = [p for p in stage.inputs if not snapshot.holds(p)]
            uncached = [s.name for s in stages if s.name in local_only and s.name in stage.upstream
                        and not s.outs_cached]
            if missing or uncached:
                local_only.add(stage.name)
                why = (f"git does not ship its input(s) {', '.join(missing)}" if missing
                       else f"it reads uncached outputs of {', '.join(uncached)}, which runs in the workspace")
                log.info("stage '%s' runs in the workspace, not on a worker: %s", stage.name, why)
    outcomes: dict[str, dict[str, Any]] = {}
    done: set[str] = set()            # recorded in the workspace's dvc.lock (or up to date)
    failed: set[str] = set()          # failed, or not run because an upstream stage failed
    ran: set[str] = set()             # ran or restored in this run: their outputs may have changed
    on_remote: set[str] = set()       # outputs known to be on the DVC remote
    in_flight: dict[Any, str] = {}
    failure: BaseException | None = None
    run_cache_pushed = False

    def finish_locally(stage: Stage, up_to_date: bool) -> None:
        runner_task = run_stage.with_options(name=f"dvc-{stage.name}", task_run_name=stage.name, retries=retries,
                                             retry_delay_seconds=retry_delay_s)
        state = runner_task(str(ws), stage.name, force=force, up_to_date=up_to_date,
                            timeout_s=orchestration.timeout_for(stage.name), return_state=True)
        settle(stage.name, state)

    def settle(name: str, state) -> None:
        nonlocal failure
        if state.is_completed():
            outcome = state.result()
            outcomes[name] = outcome
            done.add(name)
            if outcome.get("status") in ("ran", "restored"):
                ran.add(name)
            return
        failed.add(name)
        error = failure_of(name, state)
        outcomes[name] = {"stage": name, "status": failed_status(error)}
        failure = failure or error   # the flow re-raises the first one

    def ensure_on_remote(names: list[str]) -> None:
        """Push the outputs of upstream stages a worker will pull (once per stage and run)."""
        nonlocal run_cache_pushed
        missing = [n for n in names if n not in on_remote]
        if not missing and run_cache_pushed:
            return
        # The first push also sends the workspace's run cache, so that a worker restores what this workspace
        # already ran instead of running it again.
        args = ["push"] + ([] if run_cache_pushed else ["--run-cache"]) + missing
        returncode, lines, _ = run_dvc(ws, args)
        if returncode != 0:
            raise step_failed(",".join(missing), returncode, lines, "pushing inputs to the DVC remote", classify=False)
        on_remote.update(missing)
        run_cache_pushed = True

    def dispatch(stage: Stage) -> None:
        import dask

        ensure_on_remote(list(stage.upstream))
        resources = stage_resources(stage, orchestration.cpus_for(stage.name), wants_gpu(stage.name), shape)
        task_run = run_stage_on_worker.with_options(name=f"dvc-{stage.name}", task_run_name=stage.name,
                                                    retries=retries, retry_delay_seconds=retry_delay_s)
        records = {path: (ws / path).read_text(encoding="utf-8") if (ws / path).exists() else ""
                   for path in record_files}
        with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
            future = runner.submit(task_run, parameters={
                "stage": stage.name, "upstream": list(stage.upstream), "snapshot": snapshot,
                "records": records, "remote_url": remote_url, "cpus": resources.get("CPU", 1),
                "timeout_s": orchestration.timeout_for(stage.name)})
        in_flight[future] = stage.name
        log.info("stage '%s' dispatched to the Dask cluster (resources %s)", stage.name, resources or "none")

    def record(name: str, worker_outcome: dict[str, Any]) -> None:
        """Record a stage a worker ran: DVC restores it from the run cache the worker pushed."""
        nonlocal failure
        returncode, status, lines = run_dvc_stage(ws, name, log=log, pull=True, finish_on_interrupt=True)
        if returncode != 0:
            failed.add(name)
            outcomes[name] = {"stage": name, "status": "failed (recording)"}
            failure = failure or step_failed(name, returncode, lines, "recording the worker's run in the workspace",
                                             classify=False)
            return
        if status == "ran":   # the worker's run was not on the remote: DVC ran the stage here instead
            log.warning("stage '%s': the worker's run was not found on the DVC remote; it ran again here", name)
        outcomes[name] = {**worker_outcome, "recorded": status}
        done.add(name)
        on_remote.add(name)
        if worker_outcome.get("status") in ("ran", "restored") or status == "ran":
            ran.add(name)

    try:
        while True:
            progressed = True
            while progressed:
                progressed = False
                for stage in stages:
                    name = stage.name
                    if name in outcomes or name in in_flight.values():
                        continue
                    if failed.intersection(stage.upstream):
                        failed.add(name)
                        outcomes[name] = {"stage": name, "status": "not run (upstream failed)"}
                        log.warning("stage '%s' not run: an upstream stage failed", name)
                        progressed = True
                        continue
                    if not done.issuperset(stage.upstream):
                        continue
                    up_to_date = stale is not None and name not in stale and not ran.intersection(stage.upstream)
                    if runner is None or up_to_date or not stage.portable or name in local_only:
                        finish_locally(stage, up_to_date)
                    else:
                        dispatch(stage)
                    progressed = True
            if not in_flight:
                break
            from distributed import wait

            with client.as_current():
                finished, _ = wait([f.wrapped_future for f in in_flight], return_when="FIRST_COMPLETED")
            for future in [f for f in in_flight if f.wrapped_future in finished]:
                name = in_flight.pop(future)
                state = _final_state(future)
                if state.is_completed():
                    record(name, state.result())
                else:
                    settle(name, state)
    except BaseException:
        # Ctrl-C or an error here: stop what the workers run; nothing more gets recorded.
        if runner is not None:
            with contextlib.suppress(Exception):
                client.run(stop_stage_processes)
        raise
    return [outcomes[s.name] for s in stages if s.name in outcomes], failure
