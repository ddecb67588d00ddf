"""The dataset-change watcher: fingerprint the data source, run the pipeline only when it changed.

"Changed" means: differs from the fingerprint the last SUCCESSFUL pipeline run recorded
(`.prefect-state/fingerprint.json`; a failed run records nothing, so the next check tries again).
Two ways to react:
- mode "run"   (CLI `python -m flows watch`): run the pipeline flow inline, as a subflow;
- mode "event" (served on a schedule): emit `fmnist.dataset.changed`; the served pipeline deployment's
  DeploymentEventTrigger starts the run. The same fingerprint is not re-announced within `resend_after_s`.
Not about the stages themselves: see flows.pipeline_flow.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task

from flows import DATASET_CHANGED_EVENT, fingerprint
from flows.pipeline_flow import pipeline_flow


def resource_id(workspace: str | os.PathLike) -> str:
    """The event resource naming one workspace, so a trigger only fires for its own checkout."""
    digest = hashlib.sha256(str(Path(workspace).resolve()).encode()).hexdigest()[:16]
    return f"fmnist.workspace.{digest}"


@task(name="fingerprint-source", persist_result=False)
def fingerprint_source(workspace: str) -> dict[str, Any]:
    state = fingerprint.load_state(workspace)
    current = fingerprint.compute(workspace, state.get("last_seen"))
    fingerprint.save_state(workspace, last_seen=current)
    is_changed = fingerprint.changed(current, state.get("last_success"))
    last = (state.get("last_success") or {}).get("digest", "none")
    get_run_logger().info("source %s: fingerprint %s… (last successful run: %s…) -> %s", current["source"],
                          current["digest"][:12], last[:12], "CHANGED" if is_changed else "unchanged")
    return {"fingerprint": current, "changed": is_changed}


@flow(name="fmnist-dataset-watcher")
def watcher_flow(workspace: str | None = None, mode: Literal["run", "event"] = "run",
                 targets: list[str] | None = None, resend_after_s: float = 3600.0) -> dict[str, Any]:
    """Check the data source; when it changed since the last successful run, run (or trigger) the pipeline."""
    log = get_run_logger()
    ws = str(Path(workspace or os.getcwd()).resolve())
    check = fingerprint_source(ws)
    current = check["fingerprint"]
    if not check["changed"]:
        log.info("data source unchanged since the last successful run: nothing to do")
        return {"changed": False, "action": "none", "digest": current["digest"]}
    if mode == "event":
        from prefect.events import emit_event

        pending = fingerprint.load_state(ws).get("announced") or {}
        if pending.get("digest") == current["digest"] and time.time() - pending.get("at", 0) < resend_after_s:
            log.info("change %s… already announced %.0f s ago; waiting for its pipeline run",
                     current["digest"][:12], time.time() - pending["at"])
            return {"changed": True, "action": "already-announced", "digest": current["digest"]}
        emit_event(event=DATASET_CHANGED_EVENT,
                   resource={"prefect.resource.id": resource_id(ws), "prefect.resource.name": ws},
                   payload={"workspace": ws, "source": current["source"], "digest": current["digest"],
                            "targets": targets})
        fingerprint.save_state(ws, announced={"digest": current["digest"], "at": time.time()})
        log.info("emitted %s for %s (fingerprint %s…)", DATASET_CHANGED_EVENT, ws, current["digest"][:12])
        return {"changed": True, "action": "event", "digest": current["digest"]}
    log.info("data source changed: running the pipeline")
    pipeline_flow(workspace=ws, targets=targets)   # raises on failure: the fingerprint is then not recorded
    return {"changed": True, "action": "ran", "digest": current["digest"]}
