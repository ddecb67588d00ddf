"""The continuous-training loop end to end, as production runs it, on a real Prefect server and a real data slice.

One workspace (a copy of the shared `models_workspace`: the 500/200 slice, gaussian-nb and decision-tree) with a
CustomWebhook notification block named in params.yaml, a webhook receiver on loopback and the model service
(`python -m pipeline serve`) running beside the flows, each started as a user starts it:
1. `python -m flows run`: every stage is cached, the promotion step makes the run's best model the first
   champion (version 1) and the service answers with it;
2. a valid data change (other real training rows): the models retrain, a promotion is decided and announced
   ("promotion" with old -> new), and the RUNNING service answers with version 2 without a restart;
3. an inverted-image change: the gate rejects it (exit 3), the webhook gets "gate-rejected" with the failed
   check, and neither the champion alias nor the service's answers change;
4. foreign images (noise) sent to the service: `python -m flows monitor` alerts (exit 3) and the webhook gets
   "monitor-alert" naming what drifted.
Every wait is on a condition with a bound; each process is stopped in `finally`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from _prefect_server import free_port, stop_group, wait_for
from _webhook import WebhookReceiver
from conftest import REPO, copy_workspace
from tests.test_predict import png_bytes

from pipeline.data.fetch import to_kaggle_table, write_kaggle_csv
from pipeline.serving import releases

pytestmark = pytest.mark.slow

BLOCK = "loop-alerts"
BOUND_S = 600            # a bound on every wait (so a hang fails), not a speed requirement
TRAIN_CSV = "source/fashion-mnist_train.csv"


@pytest.fixture
def loop_workspace(models_workspace, real_prefect_server, tmp_path):
    ws = copy_workspace(models_workspace.path, tmp_path / "ws", **{
        "notify.block": f"custom-webhook/{BLOCK}",
        # The loop is under test here, not the rule (tests/test_promote.py): any eligible challenger is promoted.
        "promote.min_accuracy": 0.0, "promote.alpha": 1e-12,
        # A window of 200 served images is enough for a verdict, on the whole window and per predicted class.
        "monitor.min_requests": 100, "monitor.min_class_requests": 10})
    return ws


def test_data_change_to_served_champion_gate_rejection_and_monitoring_alert(loop_workspace, real_prefect_server,
                                                                          fmnist, tmp_path):
    ws = loop_workspace
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_API_URL=real_prefect_server.api_url, PYTHONUNBUFFERED="1")
    procs: dict[str, subprocess.Popen] = {}
    with WebhookReceiver() as hook:
        from prefect.blocks.notifications import CustomWebhookNotificationBlock
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: real_prefect_server.api_url}):
            CustomWebhookNotificationBlock(name="loop", url=hook.url, json_data={
                "subject": "{{subject}}", "body": "{{body}}"}).save(BLOCK, overwrite=True)

        def flow(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "flows", *args, "--workspace", str(ws)], env=env, cwd=ws,
                                  capture_output=True, text=True, timeout=BOUND_S)

        # 1. the first run: the best model becomes the champion
        first = flow("run")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        champion = releases.champion(ws)
        assert champion is not None and champion.number == 1
        first_news = hook.wait(1, BOUND_S)[-1]
        assert first_news["subject"].startswith("[promotion]") and "promoted" in first_news["subject"], first_news
        assert "Champion: none -> v1" in first_news["body"] and "test accuracy" in first_news["body"], first_news

        port = free_port()
        log = open(tmp_path / "serve.log", "w")
        procs["serve"] = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port)], cwd=ws,
                                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            import httpx

            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            x_test = fmnist["test"][0]

            def served_version() -> int | None:
                try:
                    resp = http.post("/predict", files={"file": ("a.png", png_bytes(x_test[0]), "image/png")})
                except httpx.HTTPError:
                    return None
                return resp.json()["version"] if resp.status_code == 200 else None

            assert wait_for("the service to answer", served_version, time.monotonic() + BOUND_S, procs) == 1

            # 2. a valid data change: other real rows, as many as the gate expects
            x, y = fmnist["train"]
            write_kaggle_csv(to_kaggle_table(x[500:1000], y[500:1000]), ws / TRAIN_CSV)
            second = flow("run")
            assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
            assert releases.champion(ws).number == 2
            promoted = hook.wait(2, BOUND_S)[-1]
            assert promoted["subject"].startswith("[promotion]") and "promoted" in promoted["subject"], promoted
            assert "Champion: v1 -> v2" in promoted["body"] and "McNemar" in promoted["body"], promoted
            wait_for("the service to serve version 2", lambda: served_version() == 2,
                     time.monotonic() + BOUND_S, procs, every=0.2)

            # 3. inverted images: the gate rejects them, nothing in service changes
            aliases_before = (ws / "registry" / "aliases.json").read_bytes()
            write_kaggle_csv(to_kaggle_table(255 - x[500:1000], y[500:1000]), ws / TRAIN_CSV)
            rejected = flow("run")
            assert rejected.returncode == 3, rejected.stdout[-3000:] + rejected.stderr[-3000:]
            gate = hook.wait(3, BOUND_S)[-1]
            assert gate["subject"].startswith("[gate-rejected]") and "validate" in gate["subject"], gate
            # the failed check: inverted garments are mostly white, so the gate's degenerate-image check fires first
            assert str(ws) in gate["body"] and "degenerate" in gate["body"] and "train:" in gate["body"], gate
            assert (ws / "registry" / "aliases.json").read_bytes() == aliases_before
            assert served_version() == 2

            # 4. foreign images served (noise: not a garment; inverted garments would not do, the service turns
            # a light-background picture back as Fashion-MNIST was made) -> the monitor alerts
            noise = np.random.default_rng(0).integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
            for image in noise:
                resp = http.post("/predict", files={"file": ("a.png", png_bytes(image), "image/png")})
                assert resp.status_code == 200, resp.text
        finally:
            stop_group(procs.pop("serve"))    # a graceful stop flushes the request log
            log.close()
        watch = flow("monitor")
        assert watch.returncode == 3, watch.stdout[-3000:] + watch.stderr[-3000:]
        alert = hook.wait(4, BOUND_S)[-1]
        assert alert["subject"].startswith("[monitor-alert]"), alert
        report = json.loads((ws / "monitoring" / "report.json").read_text())
        assert report["alerts"], report
        assert any(a["check"] in alert["body"] for a in report["alerts"]), (alert, report["alerts"])   # what drifted
