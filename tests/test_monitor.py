"""Monitoring what the service sees (pipeline.serving.monitor, flows.monitor) on real images.

"Served traffic" is written with the service's own RequestLog: official test images (no alert), the same images
inverted, foreign images (uniform noise), and a shifted class mix. The predicted class of a logged request is the
image's true label (a stand-in for a good champion: the shared workspaces' models, trained on 400 images, mix the
classes they predict) and its confidence the workspace model's own top probabilities on official test images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _prefect_runs import artifacts
from conftest import call_cli, copy_workspace, run_cli

from pipeline import io
from pipeline.data.content import load_profile
from pipeline.params import section
from pipeline.schema import CLASS_NAMES
from pipeline.serving import monitor
from pipeline.serving.request_log import LOG_DIR, RequestLog, read_window
from tests.conftest import REPO, shipped_params

PARAMS = section(monitor.MonitorParams, "monitor", shipped_params())
PRIOR = np.full(len(CLASS_NAMES), 1 / len(CLASS_NAMES))   # the official training split's shares
SERVED = 2000      # requests per window: enough for every class to be judged (min_class_requests)


@pytest.fixture(scope="module")
def profile():
    return load_profile(REPO / shipped_params()["validate"]["drift"]["reference"])


def logged(log_dir, images, predicted, confidence, model="gaussian-nb", version=None):
    """Write requests the way the service does; return what read_window gives back."""
    log = RequestLog(log_dir, max_rows=10 * len(images), flush_rows=500)
    for image, p, c in zip(images, predicted, confidence):
        log.append(image, model, version, int(p), float(c))
    log.close()
    return read_window(log_dir)


def baseline(confidence):
    return {"model": "gaussian-nb", "version": -1, "mean_confidence": float(np.mean(confidence)), "source": "test"}


@pytest.fixture(scope="module")
def official(fmnist):
    x, y = fmnist["test"]
    return x[:SERVED], y[:SERVED]


def test_official_test_images_raise_no_alert(official, profile, tmp_path):
    x, y = official
    conf = np.linspace(0.6, 1.0, len(y))
    window = logged(tmp_path / "log", x, y, conf)
    report = monitor.assess(window, profile, PRIOR, baseline(conf), PARAMS)
    assert report["verdict"] == monitor.OK, monitor.alert_summary(report)
    assert all(r["pixel_js"] is not None for r in report["classes"]), "every class has enough requests to be judged"
    assert report["confidence"]["served_mean"] == pytest.approx(np.mean(conf), abs=1e-6)


def test_inverted_images_alert_naming_the_drift(official, profile, tmp_path):
    x, y = official
    conf = np.full(len(y), 0.9)
    report = monitor.assess(logged(tmp_path / "log", 255 - x, y, conf), profile, PRIOR, baseline(conf), PARAMS)
    assert report["verdict"] == monitor.ALERT
    drifted = {(a["check"], a["name"]) for a in report["alerts"]}
    assert {("pixel_js", name) for name in CLASS_NAMES} <= drifted
    first = next(a for a in report["alerts"] if a["check"] == "pixel_js")
    assert first["value"] > first["limit"] == PARAMS.max_pixel_js
    assert "pixel_js" in first["message"] and first["name"] in first["message"]


def test_foreign_images_alert(official, profile, tmp_path):
    _, y = official
    noise = np.random.default_rng(0).integers(0, 256, size=(len(y), 28, 28), dtype=np.uint8)
    conf = np.full(len(y), 0.9)
    report = monitor.assess(logged(tmp_path / "log", noise, y, conf), profile, PRIOR, baseline(conf), PARAMS)
    assert report["verdict"] == monitor.ALERT
    assert {a["check"] for a in report["alerts"]} >= {"pixel_js", "mean_image_rmse", "intensity_psi"}


def test_a_shifted_class_mix_alerts_on_the_class_shares_only(official, profile, tmp_path):
    x, y = official
    keep = y < 5                   # only tops, trousers, pullovers, dresses, coats: real images, half the classes
    conf = np.full(int(keep.sum()), 0.9)
    report = monitor.assess(logged(tmp_path / "log", x[keep], y[keep], conf), profile, PRIOR, baseline(conf), PARAMS)
    assert report["verdict"] == monitor.ALERT
    (alert,) = report["alerts"]           # the images themselves did not drift
    assert alert["check"] == "class_share_psi" and alert["value"] > alert["limit"] == PARAMS.max_class_share_psi
    assert alert["class"] >= 5, "the class that moved most is one that vanished"
    assert "class_share_psi" in alert["message"] and alert["name"] in alert["message"]


def test_a_confidence_drop_alerts(official, profile, tmp_path):
    x, y = official
    test_conf = np.linspace(0.6, 1.0, len(y))
    served = test_conf - 2 * PARAMS.max_confidence_drop
    report = monitor.assess(logged(tmp_path / "log", x, y, served), profile, PRIOR, baseline(test_conf), PARAMS)
    assert [a["check"] for a in report["alerts"]] == ["confidence_drop"]
    assert report["alerts"][0]["value"] > PARAMS.max_confidence_drop


def test_too_few_requests_give_no_verdict(official, profile, tmp_path):
    x, y = official
    n = PARAMS.min_requests - 1
    conf = np.full(n, 0.9)
    report = monitor.assess(logged(tmp_path / "log", 255 - x[:n], y[:n], conf), profile, PRIOR, baseline(conf), PARAMS)
    assert report["verdict"] == monitor.NO_VERDICT and report["alerts"] == []
    assert str(PARAMS.min_requests) in report["why"]


def test_the_window_is_half_open_and_naive_times_are_utc():
    from datetime import datetime, timezone

    now = datetime(2026, 12, 6, 12, tzinfo=timezone.utc)
    assert monitor.window_bounds(24, None, None, now) == (datetime(2026, 12, 5, 12, tzinfo=timezone.utc), now)
    since, until = monitor.window_bounds(None, "2026-12-06T01:00", "2026-12-06T02:00+00:00")
    assert since.tzinfo is not None and (until - since).total_seconds() == 3600


# ------------------------------------------------------------------------------ CLI and flow, end to end
@pytest.fixture(scope="module")
def served_workspace(models_workspace, tmp_path_factory, fmnist):
    """A copy of the shared models workspace whose log holds official test images (as served by gaussian-nb, with
    its own top probabilities on official test images) and, in a second log, the same images inverted."""
    ws = copy_workspace(models_workspace.path, tmp_path_factory.mktemp("monitor") / "ws")
    probs = io.load_arrays(ws / "metrics/gaussian-nb/seed-42.predictions.npz")["probs"]
    x, y = fmnist["test"]
    x, y = x[:SERVED], y[:SERVED]
    conf = np.resize(probs.max(axis=1), len(y))          # the model's confidence on official test images
    logged(ws / LOG_DIR, x, y, conf)
    logged(ws / "inverted", 255 - x, y, conf)
    return ws


def test_cli_exit_codes_ok_alert_and_clear_errors(served_workspace, tmp_path):
    ws = served_workspace
    ok = call_cli("monitor", cwd=ws)
    assert ok.returncode == 0, ok.stderr
    report = json.loads((ws / "monitoring/report.json").read_text())
    assert report["verdict"] == "ok" and report["requests"] == SERVED
    assert report["confidence"]["baseline"]["source"].startswith("metrics/gaussian-nb/seed-42.predictions.npz")
    assert (ws / "monitoring/report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "# Monitoring: OK" in (ws / "monitoring/report.md").read_text()

    alert = run_cli("monitor", "--log-dir", "inverted", "--out", str(tmp_path / "alert"), cwd=ws)
    assert alert.returncode == 3, alert.stderr
    assert "pixel_js" in alert.stderr and "Traceback" not in alert.stderr
    assert json.loads((tmp_path / "alert/report.json").read_text())["verdict"] == "alert"

    missing_log = call_cli("monitor", "--log-dir", "nowhere", "--out", str(tmp_path / "x"), cwd=ws)
    assert missing_log.returncode == 2 and "no served-request log" in missing_log.stderr
    empty = call_cli("monitor", "--since", "2001-01-01T00:00", "--until", "2001-01-02T00:00", "--out",
                     str(tmp_path / "empty"), cwd=ws)
    assert empty.returncode == 0 and json.loads((tmp_path / "empty/report.json").read_text())["verdict"] == "no_verdict"


def test_cli_without_a_reference_profile_is_a_clear_error(served_workspace, tmp_path):
    ws = copy_workspace(served_workspace, tmp_path / "ws")
    (ws / shipped_params()["validate"]["drift"]["reference"]).unlink()
    proc = call_cli("monitor", cwd=ws)
    assert proc.returncode == 2 and "reference profile not found" in proc.stderr and "Traceback" not in proc.stderr


def test_flow_publishes_the_report_and_fails_as_alert(served_workspace, prefect_server, tmp_path):
    from flows.cli import main as flows_main
    from flows.monitor import ARTIFACT_KEY, ALERT_STATE, monitor_flow

    ws = copy_workspace(served_workspace, tmp_path / "ws")
    state = monitor_flow(workspace=str(ws), return_state=True)
    assert state.is_completed(), state.message
    assert "# Monitoring: OK" in artifacts(state.state_details.flow_run_id)[ARTIFACT_KEY].data

    (ws / LOG_DIR).rename(ws / "kept")
    (ws / "inverted").rename(ws / LOG_DIR)
    assert flows_main(["monitor", "--workspace", str(ws)]) == 3      # `python -m flows monitor`, in this process
    (run,) = flow_runs("fmnist-monitor", after=state.state_details.flow_run_id)
    assert run.state.is_failed() and run.state.name == ALERT_STATE and "pixel_js" in run.state.message
    assert "# Monitoring: ALERT" in artifacts(run.id)[ARTIFACT_KEY].data


def flow_runs(flow_name: str, after) -> list:
    """Runs of `flow_name` that started after the run `after` (the API's own order, not a clock of ours)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_ASC)
    ids = [r.id for r in runs]
    return runs[ids.index(after) + 1:]


def test_the_confidence_baseline_of_a_registry_version_is_its_own_test_predictions(served_workspace, tmp_path):
    from pipeline.params import load_params
    from pipeline.serving import releases
    from pipeline.serving.promote import model_digest

    ws = copy_workspace(served_workspace, tmp_path / "ws")
    model_dir = ws / "models/gaussian-nb/seed-42"
    same = releases.register(ws, "gaussian-nb", 42, model_dir, meta={"model_sha256": model_digest(model_dir)})
    other = releases.register(ws, "gaussian-nb", 42, model_dir, meta={"model_sha256": "not these bytes"})
    probs = io.load_arrays(ws / "metrics/gaussian-nb/seed-42.predictions.npz")["probs"]

    def window(version):
        return {"model": np.array(["gaussian-nb"] * 3, dtype=object), "version": np.full(3, version, np.int32)}

    raw = load_params(ws / "params.yaml")
    base, _ = monitor.confidence_baseline(ws, raw, window(same.number), ws / "metrics", ws / "models")
    assert base["version"] == same.number and base["mean_confidence"] == pytest.approx(probs.max(axis=1).mean())
    base, why = monitor.confidence_baseline(ws, raw, window(other.number), ws / "metrics", ws / "models")
    assert base is None and f"v{other.number}" in why and "is not the model in" in why


def test_serve_schedules_the_monitor_on_params_cron(tmp_path):
    from flows.deployments import build_deployments

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    *_, deployment = build_deployments(tmp_path)
    assert deployment.name == "scheduled" and deployment.parameters == {"workspace": str(tmp_path)}
    assert deployment.schedules[0].schedule.cron == PARAMS.cron
