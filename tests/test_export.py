"""export: the ONNX copy of a Keras model agrees with the Keras model on 1,000 official test images; only Keras
models are exported; the DVC matrix follows params.yaml export.models x train.seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.serving.export import INPUT_NAME, META_FILE, ONNX_FILE
from pipeline.models import registry
from pipeline.schema import CLASS_NAMES
from tests._trained import SEED
from tests.conftest import make_workspace, run_cli, run_dvc


@pytest.fixture(scope="module")
def ws(trained) -> Path:
    return trained


@pytest.fixture(scope="module")
def exported(cnn_ours_export) -> Path:
    """cnn-ours: BatchNorm, in-model flip augmentation, and flip-averaged prediction (the hardest to export)."""
    assert "agrees with Keras on 1000 test images" in cnn_ours_export.first_run
    return cnn_ours_export.path


def test_onnx_export_agrees_with_keras_on_1000_official_test_images(ws, exported, fmnist):
    import onnxruntime as ort

    x = fmnist["test"][0][:1000]
    session = ort.InferenceSession(str(exported / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    p_onnx = session.run(None, {INPUT_NAME: (x[..., None] / np.float32(255)).astype(np.float32)})[0]
    p_keras = registry.load_predictor(ws / "models" / "cnn-ours" / f"seed-{SEED}")(x)
    assert p_onnx.shape == (1000, 10)
    assert np.array_equal(p_onnx.argmax(1), p_keras.argmax(1))
    assert np.max(np.abs(p_onnx - p_keras)) <= 1e-5
    # the model really is flip-averaged in the file (its single view differs from the average)
    single = registry.load_keras(ws / "models" / "cnn-ours" / f"seed-{SEED}" / registry.KERAS_FILE)
    single_view = np.asarray(single.predict(registry.preprocess("keras", x[:50]), verbose=0))
    assert np.max(np.abs(single_view - p_onnx[:50])) > 1e-4

    meta = json.loads((exported / META_FILE).read_text())
    assert meta["flip_averaged"] is True and meta["class_names"] == list(CLASS_NAMES)
    assert meta["check"]["images"] == 1000 and meta["check"]["argmax_agreement"] == 1.0
    assert meta["check"]["max_abs_diff"] <= 1e-5 and meta["input"]["name"] == INPUT_NAME


@pytest.mark.parametrize("edit, args, message", [
    (None, ["--model", "gaussian-nb"], "`gaussian-nb` is a scikit-learn model; only Keras models are exported"),
    ({"export.models": ["gaussian-nb"]}, ["--model", "cnn-ours"], "export.models lists `gaussian-nb`, a scikit-learn"),
    ({"export.models": ["cnn-simple"]}, ["--model", "cnn-ours"],
     "export.models lists `cnn-simple`, which train.models does not train"),
    ({"export.max_abs_diff": 2.0}, ["--model", "cnn-ours"], "export.max_abs_diff in (0, 1)"),
])
def test_export_refuses_what_it_cannot_export_clearly(ws, tmp_path, edit, args, message):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for key, value in (edit or {}).items():
        section, leaf = key.split(".")
        params[section][leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_cli("--params", str(tmp_path / "params.yaml"), "export", *args, "--out", str(tmp_path / "out"), cwd=ws)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_dvc_export_stages_follow_export_models_and_seeds(tmp_path, fmnist):
    ws = make_workspace(tmp_path / "ws", fmnist, train_rows=200, test_rows=100,
                        params_overrides={"train.seeds": [42, 43], "export.models": ["cnn-ours"]})
    proc = run_dvc("stage", "list", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    stages = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {s for s in stages if s.startswith("export@")} == {"export@cnn-ours-42", "export@cnn-ours-43"}
    # The shipped default exports nothing, so `dvc repro` costs nothing more.
    shipped = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath("params.yaml").read_text())
    assert shipped["export"]["models"] == []
