"""Reading a flow run's task runs back from the Prefect API the tests talk to."""
from __future__ import annotations

import time

from _prefect_server import wait_for


def task_runs(flow_run_id, expect=(), timeout_s: float = 60.0) -> dict[str, object]:
    """The flow run's task runs by name, once every name in `expect` is there in a final state.

    The server records task-run states from events, asynchronously: right after a flow returns, its last task run
    can still be missing or not yet final, so the caller names the task runs it is about to look at.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        def recorded() -> tuple[dict[str, object]] | None:   # a tuple: an empty dict is an answer too
            found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            runs = {r.name: r for r in found}
            final = all(name in runs and runs[name].state is not None and runs[name].state.is_final()
                        for name in expect)
            return (runs,) if final else None

        (runs,) = wait_for(f"task runs {sorted(expect)} of flow run {flow_run_id} in a final state", recorded,
                           time.monotonic() + timeout_s, {}, every=0.2)
    return runs


def artifacts(flow_run_id) -> dict[str, object]:
    """The flow run's artifacts by key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        run_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        found = client.read_artifacts(artifact_filter=run_filter)
    return {a.key: a for a in found}
