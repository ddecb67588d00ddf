"""The model registry's promotion rule (pipeline.serving.promote) and its step in the flow (flows.promotion).

The rule is driven with prediction arrays over the real test labels; the command runs on a copy of the `trained`
workspace (tiny real models), where the official test set and the evaluate stage's 300-image metrics differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import call_cli, run_cli, run_dvc, set_params

from pipeline import io
from pipeline.data.convert import load_test_set
from pipeline.errors import PipelineError
from pipeline.metrics import mcnemar, wilson_interval
from pipeline.models import registry
from pipeline.serving import releases
from pipeline.serving.export import META_FILE, ONNX_FILE
from pipeline.serving.promote import PREDICTIONS_FILE, PROMOTED, REFUSED, UNCHANGED, decide, evaluated_on


# ------------------------------------------------------------------------------ the rule (pure)
@pytest.fixture(scope="module")
def labels(fmnist) -> np.ndarray:
    return fmnist["test"][1][:2000].astype(np.int64)


def with_errors(y: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Predictions equal to y except at the indices `wrong` (a different class there)."""
    pred = y.copy()
    pred[wrong] = (y[wrong] + 1) % 10
    return pred


def test_no_champion_the_first_eligible_model_becomes_it(labels):
    pred = with_errors(labels, np.arange(100))                          # 95% right
    d = decide(labels, pred, None, alpha=0.05, min_accuracy=0.9)
    assert d.decision == PROMOTED and d.champion is None and d.mcnemar is None
    assert "no champion yet" in d.reason
    assert d.challenger.correct == len(labels) - 100
    assert d.challenger.ci95 == pytest.approx(wilson_interval(len(labels) - 100, len(labels)))


def test_below_the_minimum_accuracy_is_refused_with_or_without_a_champion(labels):
    pred = with_errors(labels, np.arange(300))                          # 85% right
    for champion in (None, labels.copy()):
        d = decide(labels, pred, champion, alpha=0.05, min_accuracy=0.9)
        assert d.decision == REFUSED and "below the minimum 0.9" in d.reason


def test_significantly_worse_is_refused_and_not_significantly_worse_is_promoted(labels):
    champion = with_errors(labels, np.arange(0, 100))
    worse = with_errors(labels, np.arange(0, 160))                      # 60 more errors, none fewer
    d = decide(labels, worse, champion, alpha=0.05, min_accuracy=0.5)
    assert d.decision == REFUSED and "significantly worse" in d.reason
    assert (d.mcnemar["b"], d.mcnemar["c"]) == (0, 60)
    assert d.mcnemar["p_exact"] == mcnemar(labels, worse, champion)["p_exact"] < 0.05
    slightly_worse = with_errors(labels, np.arange(3, 105))             # 5 more, 3 fewer: p well above alpha
    d = decide(labels, slightly_worse, champion, alpha=0.05, min_accuracy=0.5)
    assert d.decision == PROMOTED and d.challenger.accuracy < d.champion.accuracy
    assert d.mcnemar["p_exact"] >= 0.05 and "not significantly worse" in d.reason


def test_significantly_better_is_promoted(labels):
    champion = with_errors(labels, np.arange(0, 160))
    better = with_errors(labels, np.arange(0, 100))
    d = decide(labels, better, champion, alpha=0.05, min_accuracy=0.5)
    assert d.decision == PROMOTED and d.mcnemar["p_exact"] < 0.05 and "better" in d.reason


def test_byte_identical_model_is_unchanged(labels):
    pred = with_errors(labels, np.arange(50))
    assert decide(labels, pred, pred, alpha=0.05, min_accuracy=0.5, identical=True).decision == UNCHANGED
    assert decide(labels, pred, pred, alpha=0.05, min_accuracy=0.5, identical=False).decision == PROMOTED


# ------------------------------------------------------------------------------ the command
def accuracy_of(model_dir: Path, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(registry.load_predictor(model_dir)(x).argmax(1) == y))


def promote(ws: Path) -> dict:
    proc = call_cli("promote", "--json", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert json.loads((ws / "registry" / record["record"]).read_text()) == record
    return record


@pytest.fixture
def ws(trained, tmp_path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(trained, dest)
    return dest


def test_promote_first_champion_unchanged_rerun_refused_and_changed_test_set(ws):
    x, y = load_test_set(ws / "data/processed/test.npz")
    x, y = x[:3000], y[:3000]                          # a real slice of the official test set keeps this quick
    io.save_arrays(ws / "data/processed/test.npz", x=x, y=y)
    keras_dir, nb_dir = ws / "models/cnn-dropout-1/seed-42", ws / "models/gaussian-nb/seed-42"

    # 1. No champion: the only candidate becomes it; a Keras model gets its ONNX copy in the version.
    set_params(ws, **{"promote.candidates": ["cnn-dropout-1"], "promote.min_accuracy": 0.0})
    first = promote(ws)
    assert first["decision"] == PROMOTED and first["champion_before"] is None and first["champion_after"] == 1
    assert first["challenger"]["accuracy"] == pytest.approx(accuracy_of(keras_dir, x, y))
    assert first["challenger"]["n"] == len(y) == first["test_set"]["n"]
    assert first["test_set"]["sha256"] == io.sha256_file(ws / "data/processed/test.npz")
    assert first["challenger"]["predictions"].startswith("re-predicted"), "metrics cover 300 images, not these"
    champion = releases.champion(ws)
    assert (champion.number, champion.model) == (1, "cnn-dropout-1")
    assert releases.aliases(ws)["champion"]["record"] == first["record"]
    assert (champion.path / "model.keras").read_bytes() == (keras_dir / "model.keras").read_bytes()
    assert {ONNX_FILE, META_FILE, PREDICTIONS_FILE} <= {p.name for p in champion.path.iterdir()}
    assert json.loads((champion.path / META_FILE).read_text())["check"]["argmax_agreement"] == 1.0
    assert champion.meta["test_sha256"] == first["test_set"]["sha256"]
    assert champion.meta["test_accuracy"] == first["challenger"]["accuracy"]

    # 2. The same model again: unchanged, scored from the version's stored predictions (same test set).
    again = promote(ws)
    assert again["decision"] == UNCHANGED and again["champion_after"] == again["champion_before"] == 1
    assert again["champion"]["re_evaluated"] is False
    assert again["champion"]["accuracy"] == again["challenger"]["accuracy"] == first["challenger"]["accuracy"]
    assert [v.number for v in releases.versions(ws)] == [1]

    # 3. A challenger below the minimum: refused, the champion stays; McNemar on the same images.
    nb_acc = accuracy_of(nb_dir, x, y)
    set_params(ws, **{"promote.candidates": ["gaussian-nb"], "promote.min_accuracy": round(nb_acc + 0.01, 4)})
    refused = promote(ws)
    assert refused["decision"] == REFUSED and "below the minimum" in refused["reason"]
    assert refused["challenger"]["accuracy"] == pytest.approx(nb_acc)
    assert refused["champion_after"] == 1 and releases.champion(ws).number == 1
    expected = mcnemar(y, registry.load_predictor(nb_dir)(x).argmax(1), registry.load_predictor(keras_dir)(x).argmax(1))
    assert (refused["mcnemar"]["b_challenger_right_champion_wrong"],
            refused["mcnemar"]["c_challenger_wrong_champion_right"]) == (expected["b"], expected["c"])
    assert len(list((ws / "registry/promotions").glob(f"*-{REFUSED}.json"))) == 1

    # 4. A new test set (a real slice of the official one): the champion is re-evaluated on it.
    io.save_arrays(ws / "data/processed/test.npz", x=x[:2000], y=y[:2000])
    set_params(ws, **{"promote.candidates": ["cnn-dropout-1"], "promote.min_accuracy": 0.0})
    changed = promote(ws)
    assert changed["decision"] == UNCHANGED and changed["champion"]["re_evaluated"] is True
    assert "test set changed" in changed["champion"]["why"]
    assert changed["champion"]["n"] == 2000
    assert changed["champion"]["accuracy"] == pytest.approx(accuracy_of(keras_dir, x[:2000], y[:2000]))

    # Without --json: a short summary for a person.
    proc = call_cli("promote", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("promote: UNCHANGED: ") and "byte-identical" in lines[0]
    assert lines[1].lstrip().startswith("challenger cnn-dropout-1 (seed 42)") and "on 2000 test images" in lines[1]
    assert "(re-evaluated)" in lines[2] and "exact McNemar: 0 images" in lines[3]
    assert lines[-1].startswith("  champion: v1 -> v1; record: registry/promotions/")


def test_challenger_predictions_come_from_the_evaluate_stage_only_when_dvc_lock_vouches_for_them(ws):
    """The evaluate stage's predictions are used as they are when dvc.lock records them made on this very file."""
    x, y = load_test_set(ws / "data/processed/test.npz")
    io.save_arrays(ws / "data/processed/test.npz", x=x[:300], y=y[:300])    # the images metrics/ were made on
    preds = Path("metrics/gaussian-nb/seed-42.predictions.npz")
    test = Path("data/processed/test.npz")

    def lock(test_md5: str) -> None:
        entry = {"cmd": "python -m pipeline evaluate", "deps": [{"path": str(test), "hash": "md5", "md5": test_md5}],
                 "outs": [{"path": str(preds), "hash": "md5", "md5": md5(ws / preds)}]}
        (ws / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate@gaussian-nb-42": entry}}))

    def md5(path: Path) -> str:
        import hashlib
        return hashlib.md5(path.read_bytes()).hexdigest()

    lock(md5(ws / test))
    assert evaluated_on(ws / "dvc.lock", "evaluate@gaussian-nb-42", ws / test, ws / preds)
    assert not evaluated_on(ws / "dvc.lock", "evaluate@gaussian-nb-43", ws / test, ws / preds)
    set_params(ws, **{"promote.candidates": ["gaussian-nb"], "promote.min_accuracy": 0.0})
    record = promote(ws)
    assert record["challenger"]["predictions"].endswith("(dvc.lock: evaluated on this test set)")
    stored = io.load_arrays(ws / preds)
    assert record["challenger"]["correct"] == int(np.sum(stored["y_pred"] == stored["y_true"]))
    lock("0" * 32)                                                      # dvc.lock describes another test file
    assert promote(ws)["challenger"]["predictions"].startswith("re-predicted")


def test_missing_inputs_are_errors_with_a_hint(ws):
    shutil.rmtree(ws / "metrics")
    proc = run_cli("promote", cwd=ws)
    assert proc.returncode == 2
    assert "error [promote]: no test metrics for" in proc.stderr and "how to fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and not (ws / "registry").exists()
    (ws / "data/processed/test.npz").unlink()
    proc = call_cli("promote", cwd=ws)
    assert proc.returncode == 2 and "the test set is missing" in proc.stderr


def test_candidates_must_be_trained_models(ws):
    set_params(ws, **{"promote.candidates": ["svc"]})
    proc = call_cli("promote", cwd=ws)
    assert proc.returncode == 2 and "which train.models does not train" in proc.stderr


def test_promote_params_are_checked():
    from pipeline.params import build
    from pipeline.serving.promote import PromoteParams

    with pytest.raises(PipelineError, match="promote.alpha"):
        build(PromoteParams, {"candidates": [], "alpha": 1.5, "min_accuracy": 0.8}, "promote")


# ------------------------------------------------------------------------------ the flow's step
def test_flow_step_publishes_the_record_as_an_artifact(prefect_server, ws):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.promotion import ARTIFACT_KEY, promote_task, promotion_message, wants_promotion

    set_params(ws, **{"promote.candidates": ["gaussian-nb"], "promote.min_accuracy": 0.0})
    assert wants_promotion(ws)

    @flow
    def after_run(workspace: str) -> dict:
        return promote_task(workspace)

    state = after_run(str(ws), return_state=True)
    record = state.result()
    assert record["decision"] == PROMOTED and releases.champion(ws).model == "gaussian-nb"
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    markdown = {a.key: a for a in found}[ARTIFACT_KEY].data
    assert "# Promotion: PROMOTED" in markdown and "gaussian-nb" in markdown and record["record"] in markdown
    subject, body = promotion_message(record)
    assert "gaussian-nb" in subject and "promoted" in subject and body == markdown


def test_a_whole_dag_flow_run_ends_with_the_promotion_step_and_a_partial_run_does_not(prefect_server,
                                                                                       models_workspace, tmp_path):
    """On a real DVC workspace: the flow promotes after a whole-DAG run, from the evaluate stage's predictions
    (dvc.lock vouches for them), and publishes the record; a run of some stages only promotes nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from conftest import copy_workspace
    from flows.pipeline_flow import pipeline_flow
    from flows.promotion import ARTIFACT_KEY

    ws = copy_workspace(models_workspace.path, tmp_path / "ws", **{"promote.min_accuracy": 0.0})
    partial = pipeline_flow(workspace=str(ws), targets=["split"], retry_delay_s=0, return_state=True)
    assert partial.is_completed(), partial.message
    assert not (ws / "registry").exists()
    state = pipeline_flow(workspace=str(ws), retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    (record_path,) = (ws / "registry" / "promotions").glob("*.json")
    record = json.loads(record_path.read_text())
    best = max(("gaussian-nb", "decision-tree"),
               key=lambda n: json.loads((ws / f"metrics/{n}/seed-42.json").read_text())["test"]["accuracy"])
    assert record["decision"] == PROMOTED and record["challenger"]["model"] == best == releases.champion(ws).model
    assert record["challenger"]["predictions"].endswith("(dvc.lock: evaluated on this test set)")
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert record["record"] in {a.key: a for a in found}[ARTIFACT_KEY].data
    assert "Data and pipelines are up to date" in run_dvc("status", cwd=ws).stdout


def test_a_model_already_in_the_registry_is_not_copied_again(ws):
    """Promoting back a model whose bytes are a version already points the alias at that version."""
    from pipeline.params import load_params
    from pipeline.serving.promote import _register, model_digest

    x, y = load_test_set(ws / "data/processed/test.npz")
    nb_dir = ws / "models/gaussian-nb/seed-42"
    y_pred = registry.load_predictor(nb_dir)(x[:500]).argmax(1)
    args = (ws, load_params(ws / "params.yaml"), "gaussian-nb", 42, nb_dir, model_digest(nb_dir), "sha", y[:500],
            y_pred, x[:500])
    first, new = _register(*args)
    assert new and first.number == 1 and (first.path / "model.skops").is_file()
    assert not (first.path / ONNX_FILE).exists(), "scikit-learn models stay skops files"
    again, new = _register(*args)
    assert not new and again.number == 1 and [v.number for v in releases.versions(ws)] == [1]
