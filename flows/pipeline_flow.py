"""The pipeline flow: one Prefect task per DVC stage (read from dvc.yaml), run in dependency order via DVC.

Each task runs `dvc repro --single-item <stage>` in the workspace, so DVC decides what is cached;
a stage DVC skips ends in a Completed state named "Cached". One `dvc status` call up front spares the
per-stage DVC call for stages DVC already reports up to date and whose upstream stages did not run: a no-op
flow run costs one DVC call, not one per stage.
By default stages run one after another, under a process-wide lock and a workspace lock file (DVC cannot
run two stages in one checkout); with `workers` > 1 or a `dask_address`, independent stages run at the
same time on Dask workers, each in a clone of its own (flows.parallel). Which failures are retried, and the
data gate's terminal exit 3: flows.failures (a timeout comes from params.yaml `orchestration.stage_timeout_s`).
Artifacts (validation summary, model comparison, run summary): flows.artifacts. After a successful whole-DAG
run, the promotion step (flows.promotion) decides on the run's best model and publishes its record.
Not about when to run: see flows.watcher and flows.deployments.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from pipeline.errors import PipelineError
from pipeline.io import workspace_lock
from pipeline.params import OrchestrationParams, load_params, section

from flows import STATE_DIR, fingerprint
from flows.artifacts import publish_artifacts
from flows.dag import Stage, check_workspace, load_stages
from flows.dvc_calls import stale_stages
from flows.failures import ValidationGateFailed
from flows.notify import gate_rejected_message, notify, run_failed_message
from flows.parallel import dask_task_runner
from flows.promotion import PromotionFailed, promote_task, promotion_message, wants_promotion
from flows.scheduler import run_stages


class DefaultOrchestration:
    """The settings of a workspace whose params.yaml has no `orchestration` section (any other DVC project):
    no stage timeout, one CPU thread per stage."""

    def timeout_for(self, stage: str) -> None:
        return None

    def cpus_for(self, stage: str) -> int:
        return 1


def orchestration_settings(ws: Path) -> tuple[OrchestrationParams | DefaultOrchestration, str | None]:
    """params.yaml `orchestration` (checked as strictly as ever when present), else the defaults and the line
    that says so."""
    path = ws / "params.yaml"
    params = load_params(path) if path.exists() else {}
    if "orchestration" in params:
        return section(OrchestrationParams, "orchestration", params, path=path), None
    where = "params.yaml has no `orchestration` section" if path.exists() else "no params.yaml"
    return DefaultOrchestration(), (f"{where}: running with the defaults, no stage timeout and 1 CPU per stage "
                                    "(docs/orchestration.md, 'Any DVC project')")


def notify_failure(flow, flow_run, state) -> None:
    """Prefect's on_failure / on_crashed hook: a `gate-rejected` notification when the data gate rejected the data
    (with its failed checks), else `run-failed`. flows.notify never raises."""
    ws = Path(flow_run.parameters.get("workspace") or os.getcwd()).resolve()
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:   # a crashed run may carry no result at all
        error = exc
    if isinstance(error, ValidationGateFailed):
        notify(ws, "gate-rejected", *gate_rejected_message(error.stage, error.reason, ws))
    else:
        notify(ws, "run-failed", *run_failed_message(flow_run.name, state.name, state.message, ws))


@flow(name="fmnist-pipeline", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
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
    try:
        return _run_pipeline(ws, targets, retries, retry_delay_s, force, workers, dask_address, log)
    except PipelineError as exc:
        # A problem the user can fix (settings, the project, the remote), found before any stage started: its
        # message, what to do, and a Failed run; Prefect would log a traceback for a raised exception.
        log.error("%s", exc)
        return Failed(message=str(exc), data=exc)


def _run_pipeline(ws: Path, targets, retries, retry_delay_s, force, workers, dask_address, log):
    check_workspace(ws)
    orchestration, defaults_note = orchestration_settings(ws)
    if defaults_note:
        log.info(defaults_note)
    stages: list[Stage] = load_stages(ws, targets)
    log.info("workspace %s: %d stage(s) from DVC in order: %s", ws, len(stages), ", ".join(s.name for s in stages))
    state = fingerprint.load_state(ws)
    try:
        source_fp = fingerprint.compute(ws, state.get("last_seen"))
    except Exception as exc:   # the fingerprint only feeds the watcher; never block a run on it
        log.warning("could not fingerprint the data source: %s", exc)
        source_fp = None

    # Only a run that reached the end of the DAG has processed the data (and trained every model); a partial run
    # (--target validate) must neither tell the watcher that this data source is done nor promote a model.
    whole_dag = not targets or {s.name for s in stages} >= {s.name for s in load_stages(ws)}
    promotion_error = None
    (ws / STATE_DIR).mkdir(exist_ok=True)
    with workspace_lock(ws, f"{STATE_DIR}/run.lock"):
        stale = None if force else stale_stages(ws)
        if stale is not None:
            log.info("dvc status: %d stage(s) changed%s", len(stale), f": {', '.join(sorted(stale))}" if stale else "")
        parallel = workers > 1 or bool(dask_address)
        with dask_task_runner(workers, dask_address) if parallel else contextlib.nullcontext() as runner:
            outcomes, failure = run_stages(ws, stages, runner, stale=stale, force=force, orchestration=orchestration,
                                           retries=retries, retry_delay_s=retry_delay_s, log=log)
        publish_artifacts(ws, outcomes)
        if failure is None and whole_dag and wants_promotion(ws):
            try:
                promotion_record(ws, orchestration)
            except PromotionFailed as exc:   # the stages did their work: record the data source first
                promotion_error = exc
    if failure is not None:
        if isinstance(failure, ValidationGateFailed):
            log.error("pipeline stopped by the data-quality gate:\n%s", failure.reason)
        raise failure
    if source_fp is not None and whole_dag:
        fingerprint.save_state(ws, last_success=source_fp, last_seen=source_fp)
        log.info("recorded data-source fingerprint %s… as processed", source_fp["digest"][:12])
    elif source_fp is not None:
        log.info("partial run (targets %s): the data source is not recorded as processed", ", ".join(targets))
    if promotion_error is not None:
        raise promotion_error
    return outcomes


def promotion_record(ws: Path, orchestration) -> dict[str, Any]:
    """The promotion step of a successful whole-DAG run (flows.promotion): its record (decision, reason, figures),
    sent as a `promotion` notification (flows.notify)."""
    record = promote_task(str(ws), orchestration.timeout_for("promote"))
    notify(ws, "promotion", *promotion_message(record))
    return record
