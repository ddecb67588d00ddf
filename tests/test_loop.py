"""The continuous-training loop end to end, as production runs it, on a real Prefect server and a real data slice.

One workspace (a copy of the shared `models_workspace`: the 500/200 slice, gaussian-nb and decision-tree, every
stage run, nothing yet recorded as processed) with a CustomWebhook notification block named in params.yaml, a
webhook receiver on loopback, `python -m flows serve` (the watcher deployment on a short interval, the pipeline
deployment triggered by its event) and the model service (`python -m pipeline serve`), each started as a user
starts it. Read only through the server's API, the webhook, the service and the workspace's files:
1. the first scheduled check announces the data (`fmnist.dataset.changed`), the triggered run completes (every
   stage restored from cache), records the fingerprint and makes the best model the first champion (v1, announced
   "promotion"); the running service answers with it;
2. a valid data change (other real training rows): the watcher announces it, a second triggered run retrains,
   promotes v2 (announced old -> new, with McNemar) and the RUNNING service answers with v2 without a restart; the
   run's comparison artifact renders in the UI (figures embedded);
3. a later scheduled check finds the data unchanged: it emits nothing and starts no run;
4. an inverted-image change: the triggered run fails at the gate, the webhook gets "gate-rejected" with the failed
   check, and neither the champion alias nor the service's answers change;
5. foreign images (noise) sent to the service: `python -m flows monitor` alerts (exit 3) and the webhook gets
   "monitor-alert" naming what drifted.
Every wait is on a condition with a bound; each process is stopped in `finally` (the server at the run's end).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from _prefect_server import ServerApi, free_port, state_type, stop_group, wait_for
from _webhook import WebhookReceiver
from conftest import REPO, copy_workspace
from tests.test_predict import png_bytes

from flows import DATASET_CHANGED_EVENT, fingerprint
from flows.watcher import resource_id
from pipeline.data.fetch import to_kaggle_table, write_kaggle_csv
from pipeline.serving import releases

pytestmark = pytest.mark.slow

BLOCK = "loop-alerts"
BOUND_S = 600            # a bound on every wait (so a hang fails), not a speed requirement
TRAIN_CSV = Path("source/fashion-mnist_train.csv")
PIPELINE = ("fmnist-pipeline", "on-dataset-change")
WATCHER = ("fmnist-dataset-watcher", "scheduled")
# The watcher's schedule. Each check is a flow run in a process of its own: shorter means more CPU taken from the
# rest of the suite, longer means more waiting for the next check.
INTERVAL_S = 8


@pytest.fixture
def loop_workspace(models_workspace, real_prefect_server, tmp_path):
    ws = copy_workspace(models_workspace.path, tmp_path / "ws", **{
        "notify.block": f"custom-webhook/{BLOCK}",
        # The loop is under test here, not the rule (tests/test_promote.py): any eligible challenger is promoted.
        "promote.min_accuracy": 0.0, "promote.alpha": 1e-12,
        # A window of 200 served images is enough for a verdict, on the whole window and per predicted class.
        "monitor.min_requests": 100, "monitor.min_class_requests": 10})
    return ws


def write_rows(ws: Path, x: np.ndarray, y: np.ndarray) -> str:
    """Replace the workspace's training CSV (as a new export of the data would); its new fingerprint."""
    write_kaggle_csv(to_kaggle_table(x, y), ws / TRAIN_CSV)
    return fingerprint.compute(ws)["digest"]


def test_data_change_to_served_champion_gate_rejection_and_monitoring_alert(loop_workspace, real_prefect_server,
                                                                          fmnist, tmp_path):
    ws = loop_workspace
    deadline = time.monotonic() + BOUND_S
    env = dict(real_prefect_server.env, PYTHONUNBUFFERED="1")
    api = ServerApi(real_prefect_server.api_url)
    resource = resource_id(ws)
    procs: dict[str, subprocess.Popen] = {"prefect server": real_prefect_server.process}
    logs = {"prefect server": real_prefect_server.log, "flows serve": tmp_path / "flows-serve.log",
            "model service": tmp_path / "model-service.log"}

    def start(name: str, *cmd: str, cwd: Path) -> None:
        with open(logs[name], "wb") as out:
            procs[name] = subprocess.Popen([sys.executable, *cmd], cwd=cwd, env=env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)

    def stop(name: str) -> None:
        stop_group(procs.pop(name, None))   # a graceful stop: the service flushes its request log

    def flow_runs_finished(n: int) -> list[dict]:
        return wait_for(f"{n} triggered pipeline run(s) to finish", lambda: api.finished_runs(pipeline_id, n),
                        deadline, procs, every=2)

    with WebhookReceiver() as hook:
        from prefect.blocks.notifications import CustomWebhookNotificationBlock
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: real_prefect_server.api_url}):
            CustomWebhookNotificationBlock(name="loop", url=hook.url, json_data={
                "subject": "{{subject}}", "body": "{{body}}"}).save(BLOCK, overwrite=True)
        try:
            import httpx

            start("flows serve", "-m", "flows", "serve", "--workspace", str(ws), "--interval", str(INTERVAL_S),
                  cwd=REPO)
            port = free_port()
            start("model service", "-m", "pipeline", "serve", "--port", str(port), cwd=ws)
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            x_test = fmnist["test"][0]

            def served_version() -> int | None:
                try:
                    resp = http.post("/predict", files={"file": ("a.png", png_bytes(x_test[0]), "image/png")})
                except httpx.HTTPError:
                    return None
                return resp.json()["version"] if resp.status_code == 200 else None

            def promoted_and_served(version: int, digest: str, change: str, evidence: str) -> None:
                """The run that finished recorded `digest`, promoted `version` (the webhook's n-th message says
                `change` with its `evidence`), and the running service answers with it."""
                assert fingerprint.load_state(ws)["last_success"]["digest"] == digest
                assert releases.champion(ws).number == version
                news = hook.wait(version, BOUND_S)[-1]
                assert news["subject"].startswith("[promotion]") and "promoted" in news["subject"], news
                assert change in news["body"] and evidence in news["body"], news
                wait_for(f"the service to serve version {version}", lambda: served_version() == version,
                         deadline, procs, every=0.5)

            pipeline_id = wait_for("the served pipeline deployment", lambda: api.deployment_id(*PIPELINE),
                                   deadline, procs)
            watcher_id = wait_for("the served watcher deployment", lambda: api.deployment_id(*WATCHER),
                                  deadline, procs)

            # 1. Nothing processed yet: the first check announces the slice; the triggered run records it and
            # makes the first champion, which the service then answers with.
            first_fp = fingerprint.compute(ws)["digest"]
            wait_for("the first fmnist.dataset.changed event", lambda: api.events(DATASET_CHANGED_EVENT, resource),
                     deadline, procs)
            run1 = flow_runs_finished(1)
            assert [state_type(r) for r in run1] == ["COMPLETED"], run1
            assert run1[0]["parameters"]["workspace"] == str(ws)
            promoted_and_served(1, first_fp, "Champion: none -> v1", "test accuracy")

            # 2. A valid data change (other real rows, as many as the gate expects): announced, retrained, promoted
            # and served by the running service.
            x, y = fmnist["train"]
            second_fp = write_rows(ws, x[500:1000], y[500:1000])
            assert second_fp != first_fp
            wait_for("the event announcing the change", lambda: any(
                e["payload"].get("digest") == second_fp for e in api.events(DATASET_CHANGED_EVENT, resource)),
                deadline, procs)
            runs = flow_runs_finished(2)
            assert [state_type(r) for r in runs] == ["COMPLETED", "COMPLETED"], runs
            promoted_and_served(2, second_fp, "Champion: v1 -> v2", "McNemar")
            # The triggered run's comparison renders in the UI: figures embedded, no relative image links.
            found = api.artifacts(runs[-1]["id"])
            assert {"fmnist-model-comparison", "fmnist-model-comparison-table", "fmnist-validation"} <= set(found)
            comparison = found["fmnist-model-comparison"]["data"]
            assert "](data:image/png;base64," in comparison and "](figures/" not in comparison
            assert "gaussian-nb" in json.dumps(found["fmnist-model-comparison-table"]["data"])

            # 3. No change: a scheduled check that started after the second run finished emits nothing, runs nothing.
            done_at = max(datetime.fromisoformat(r["end_time"]) for r in runs)
            events_before = api.events(DATASET_CHANGED_EVENT, resource)
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
            assert len(api.events(DATASET_CHANGED_EVENT, resource)) == len(events_before), "unchanged data announced"
            assert len(api.flow_runs(pipeline_id)) == 2, "unchanged data must not start a pipeline run"

            # 4. Inverted images: the triggered run stops at the gate; nothing in service changes.
            aliases_before = (ws / "registry" / "aliases.json").read_bytes()
            write_rows(ws, 255 - x[500:1000], y[500:1000])
            runs = flow_runs_finished(3)
            assert [state_type(r) for r in runs] == ["COMPLETED", "COMPLETED", "FAILED"], runs
            gate = hook.wait(3, BOUND_S)[-1]
            assert gate["subject"].startswith("[gate-rejected]") and "validate" in gate["subject"], gate
            # the failed check: inverted garments are mostly white, so the gate's degenerate-image check fires first
            assert str(ws) in gate["body"] and "degenerate" in gate["body"] and "train:" in gate["body"], gate
            assert (ws / "registry" / "aliases.json").read_bytes() == aliases_before
            assert fingerprint.load_state(ws)["last_success"]["digest"] == second_fp   # a failed run records nothing
            assert served_version() == 2
            stop("flows serve")

            # 5. Foreign images served (noise: not a garment; inverted garments would not do, the service turns a
            # light-background picture back as Fashion-MNIST was made) -> the monitor alerts.
            noise = np.random.default_rng(0).integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
            for image in noise:
                resp = http.post("/predict", files={"file": ("a.png", png_bytes(image), "image/png")})
                assert resp.status_code == 200, resp.text
            stop("model service")
        except BaseException:
            for name, log in logs.items():
                if log.exists():
                    print(f"----- {name} log (tail) -----\n" + log.read_text(errors="replace")[-6000:])
            raise
        finally:
            for name in ("flows serve", "model service"):
                stop(name)
        watch = subprocess.run([sys.executable, "-m", "flows", "monitor", "--workspace", str(ws)], env=env, cwd=ws,
                               capture_output=True, text=True, timeout=BOUND_S)
        assert watch.returncode == 3, watch.stdout[-3000:] + watch.stderr[-3000:]
        alert = hook.wait(4, BOUND_S)[-1]
        assert alert["subject"].startswith("[monitor-alert]"), alert
        report = json.loads((ws / "monitoring" / "report.json").read_text())
        assert report["alerts"], report
        assert any(a["check"] in alert["body"] for a in report["alerts"]), (alert, report["alerts"])   # what drifted
