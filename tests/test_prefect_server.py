"""End to end against a real Prefect server: `python -m flows serve` reacts to a changed data source.

Uses the session's real `prefect server start` (conftest's real_prefect_server: 127.0.0.1, a free port, its own
PREFECT_HOME in tmp), serves the two
deployments (`fmnist-dataset-watcher/scheduled` on a short interval, `fmnist-pipeline/on-dataset-change`
triggered by the watcher's event) for a cheap real workspace whose `fetch.source` is a small slice of the real
data, and checks, only through the server's API and the workspace's files:
1. the first check emits `fmnist.dataset.changed` (nothing was processed yet), the triggered pipeline run
   completes and records the slice's fingerprint;
2. after one pixel of the slice changes, the watcher emits the event again, a second triggered run completes
   and the NEW fingerprint is recorded;
3. a later scheduled check with no change emits nothing and starts no run.
Every wait is bounded; the `flows serve` process group is stopped in `finally` (the server at the session's end).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from _prefect_server import stop_group, wait_for
from conftest import REPO, copy_workspace

from flows import DATASET_CHANGED_EVENT, fingerprint
from flows.watcher import resource_id

pytestmark = pytest.mark.slow

TRAIN_CSV = Path("source/fashion-mnist_train.csv")
PIPELINE = ("fmnist-pipeline", "on-dataset-change")
WATCHER = ("fmnist-dataset-watcher", "scheduled")
INTERVAL_S = 4           # the watcher's schedule
TEST_BUDGET_S = 600      # a bound on every wait (so a hang fails), not a speed requirement


class Api:
    """The few REST calls the test needs (plain httpx: no Prefect client settings in this process)."""

    def __init__(self, url: str):
        import httpx

        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)   # a loaded 2-core machine: calls outside wait_for

    def healthy(self) -> bool:
        import httpx

        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def deployment_id(self, flow: str, name: str) -> str | None:
        resp = self.http.get(f"/deployments/name/{flow}/{name}")
        return resp.json()["id"] if resp.status_code == 200 else None

    def flow_runs(self, deployment_id: str) -> list[dict]:
        resp = self.http.post("/flow_runs/filter", json={
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC",
            "limit": 200})
        resp.raise_for_status()
        return resp.json()

    def artifacts(self, flow_run_id: str) -> dict[str, dict]:
        resp = self.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        resp.raise_for_status()
        return {a["key"]: a for a in resp.json()}

    def log_messages(self, flow_run_id: str) -> list[str]:
        resp = self.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                    "sort": "TIMESTAMP_ASC", "limit": 200})
        resp.raise_for_status()
        return [entry["message"] for entry in resp.json()]

    def events(self, resource: str) -> list[dict]:
        resp = self.http.post("/events/filter", json={
            "filter": {"event": {"name": [DATASET_CHANGED_EVENT]},
                       "resource": {"id": [resource]},
                       "occurred": {"since": "2000-01-01T00:00:00Z",
                                    "until": datetime.now(timezone.utc).isoformat()}},
            "limit": 50})
        resp.raise_for_status()
        return resp.json()["events"]


def state_type(run: dict) -> str:
    return (run.get("state") or {}).get("type", "")


def test_served_deployments_react_to_a_changed_data_slice(models_workspace, real_prefect_server, tmp_path):
    deadline = time.monotonic() + TEST_BUDGET_S
    # Every stage already ran (nothing is recorded as processed yet): the first triggered run restores from cache.
    ws = copy_workspace(models_workspace.path, tmp_path / "ws")
    server, env = real_prefect_server.process, real_prefect_server.env
    serve = None
    server_log, serve_log = real_prefect_server.log, tmp_path / "serve.log"
    resource = resource_id(ws)
    try:
        api = Api(real_prefect_server.api_url)
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen([sys.executable, "-m", "flows", "serve", "--workspace", str(ws),
                                      "--interval", str(INTERVAL_S)],
                                     env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        procs = {"prefect server": server, "flows serve": serve}
        pipeline_id = wait_for("the served pipeline deployment", lambda: api.deployment_id(*PIPELINE),
                               deadline, procs)
        watcher_id = wait_for("the served watcher deployment", lambda: api.deployment_id(*WATCHER), deadline, procs)

        # 1. Nothing processed yet: the first check announces the slice, the triggered run records it.
        first_fp = fingerprint.compute(ws)["digest"]
        wait_for("the first fmnist.dataset.changed event", lambda: api.events(resource), deadline, procs)
        run1 = wait_for("the first triggered pipeline run to finish",
                        lambda: [r for r in api.flow_runs(pipeline_id) if state_type(r) in
                                 ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")], deadline, procs, every=2)
        assert [state_type(r) for r in run1] == ["COMPLETED"], run1
        assert run1[0]["parameters"]["workspace"] == str(ws)
        assert fingerprint.load_state(ws)["last_success"]["digest"] == first_fp
        assert (ws / "reports/comparison.md").exists() and (ws / "accuracy.json").exists()

        # 2. One pixel of one training image changes: the watcher announces it, a second run records it.
        source = ws / TRAIN_CSV
        lines = source.read_bytes().split(b"\n")
        cells = lines[1].split(b",")
        cells[400] = b"7" if cells[400] != b"7" else b"8"
        lines[1] = b",".join(cells)
        source.write_bytes(b"\n".join(lines))
        second_fp = fingerprint.compute(ws)["digest"]
        assert second_fp != first_fp
        wait_for("the event announcing the change",
                 lambda: any(e["payload"].get("digest") == second_fp for e in api.events(resource)),
                 deadline, procs)
        runs = wait_for("the second triggered pipeline run to finish",
                        lambda: (lambda rs: rs if len([r for r in rs if state_type(r) in (
                            "COMPLETED", "FAILED", "CRASHED", "CANCELLED")]) >= 2 else None)(
                            api.flow_runs(pipeline_id)), deadline, procs, every=2)
        assert [state_type(r) for r in runs] == ["COMPLETED", "COMPLETED"], runs
        assert fingerprint.load_state(ws)["last_success"]["digest"] == second_fp
        done_at = max(datetime.fromisoformat(r["end_time"]) for r in runs)
        # The triggered run's comparison renders in the UI: figures embedded, no relative image links.
        found = api.artifacts(runs[-1]["id"])
        assert {"fmnist-model-comparison", "fmnist-model-comparison-table", "fmnist-validation"} <= set(found)
        comparison = found["fmnist-model-comparison"]["data"]
        assert "](data:image/png;base64," in comparison and "](figures/" not in comparison
        assert "gaussian-nb" in json.dumps(found["fmnist-model-comparison-table"]["data"])

        # 3. No change: a scheduled check that started after the second run finished emits nothing, runs nothing.
        events_before = api.events(resource)
        assert [e["payload"]["digest"] for e in events_before].count(second_fp) == 1
        later = wait_for("a scheduled watcher run that started after the second pipeline run",
                         lambda: [r for r in api.flow_runs(watcher_id) if state_type(r) == "COMPLETED"
                                  and datetime.fromisoformat(r["start_time"]) > done_at], deadline, procs, every=2)
        # That check found the data unchanged and emitted nothing (its own log says so; no waiting on a clock)...
        said = wait_for("the later watcher run's log", lambda: [m for m in api.log_messages(later[0]["id"])
                                                                 if "unchanged" in m or "emitted" in m],
                        deadline, procs)
        assert any("unchanged since the last successful run" in m for m in said), said
        assert not any("emitted" in m for m in said), said
        # ...so no new event exists and no third pipeline run was started.
        assert len(api.events(resource)) == len(events_before), "unchanged data must not be announced"
        assert len(api.flow_runs(pipeline_id)) == 2, "unchanged data must not start a pipeline run"
    except BaseException:
        for name, log in (("prefect server", server_log), ("flows serve", serve_log)):
            if log.exists():
                print(f"----- {name} log (tail) -----\n" + log.read_text(errors="replace")[-6000:])
        raise
    finally:
        stop_group(serve)
    assert serve.poll() is not None
