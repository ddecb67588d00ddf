"""train stage: a tiny real training run per model, the artifact contract, safe loading, resume."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import io
from pipeline.training import train
from pipeline.errors import PipelineError
from pipeline.models import registry
from tests.conftest import run_cli, shipped_hyperparams, shipped_section

KERAS_MODELS = [n for n in registry.names() if registry.get(n).family == "keras"]
SKLEARN_MODELS = [n for n in registry.names() if registry.get(n).family == "sklearn"]

# Tiny settings so every model trains in seconds on 600 images (n_jobs=1: process start-up dominates).
TINY = {
    # batch 32: 19 updates in the one epoch, enough to beat chance clearly
    **{n: {"epochs": 1, "batch_size": 32} for n in KERAS_MODELS},
    "svc": {}, "gradient-boosting": {"n_estimators": 5, "max_depth": 3},
    "random-forest": {"n_estimators": 10, "n_jobs": 1}, "mlp": {"max_iter": 30}, "knn": {"n_jobs": 1},
    "logistic-regression": {"n_jobs": 1}, "linear-svc": {"max_iter": 200}, "sgd": {"n_jobs": 1},
    "decision-tree": {}, "perceptron": {"n_jobs": 1}, "passive-aggressive": {"n_jobs": 1},
    "extra-tree": {}, "gaussian-nb": {},
}
TRAIN_JSON_KEYS = {"model", "family", "source", "train_time_s", "epochs", "device", "backend", "seed",
                   "params_count", "val_accuracy", "val_loss", "train_accuracy", "train_loss", "hyperparams",
                   "stand_in_for"}


@pytest.fixture(autouse=True)
def isolated_checkpoints(tmp_path, monkeypatch):
    """Keras checkpoints go to <cwd>/.checkpoints by default: keep each test's in its own tmp directory."""
    monkeypatch.setattr(train, "CHECKPOINT_ROOT", tmp_path / ".checkpoints")


@pytest.fixture(scope="module")
def split_dir(small_split, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("split")
    for part in ("train", "val"):
        x, y = small_split[part]
        io.save_arrays(d / f"{part}.npz", x=x, y=y)
    return d


def params_for(name: str, **overrides) -> dict:
    return {"train": shipped_section("train", models=[name], seeds=[0]),
            "models": {name: {**shipped_hyperparams(name), **TINY[name], **overrides}}}


def check_contract(out: Path, name: str, epochs: int) -> dict:
    spec = registry.get(name)
    model_file = registry.KERAS_FILE if spec.family == "keras" else registry.SKOPS_FILE
    assert sorted(p.name for p in out.iterdir()) == sorted([model_file, "train.json", "history.csv"])
    meta = json.loads((out / "train.json").read_text())
    assert TRAIN_JSON_KEYS <= set(meta)
    assert meta["model"] == name and meta["family"] == spec.family and meta["source"] == spec.source
    assert meta["epochs"] == epochs and meta["seed"] == 0 and meta["device"]
    assert meta["stand_in_for"] == spec.stand_in_for
    with open(out / "history.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == train.HISTORY_COLUMNS
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    # With test-time flip averaging the headline val figure is the averaged one; history is single-view.
    single_view = "val_accuracy_single_view" if meta["hyperparams"].get("test_time_flip") else "val_accuracy"
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(meta[single_view])
    return meta


def check_predictor(out: Path, small_split, meta: dict) -> None:
    xv, yv = small_split["val"]
    probs = registry.load_predictor(out)(xv)
    assert probs.shape == (len(xv), 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    # the loaded model applies the training preprocessing: same accuracy as measured in training
    assert (probs.argmax(1) == yv).mean() == pytest.approx(meta["val_accuracy"], abs=0.011)


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_keras_model_trains_and_follows_contract(name, split_dir, small_split, tmp_path):
    out = tmp_path / "models" / name
    meta = train.run(name, split_dir, out, params_for(name), verbose=0)
    meta = check_contract(out, name, epochs=1)
    assert meta["backend"] in ("tensorflow", "jax", "torch")
    assert meta["params_count"] == int(sum(np.prod(w.shape) for w in
                                           registry.load_keras(out / registry.KERAS_FILE).trainable_weights))
    assert meta["val_loss"] < np.log(10) and meta["val_accuracy"] > 0.15  # learned something (chance: 0.10)
    assert not train.CHECKPOINT_ROOT.exists()  # checkpoint removed on success (and its empty parents)
    check_predictor(out, small_split, meta)


def test_test_time_flip_averages_each_image_with_its_mirror(split_dir, small_split, tmp_path):
    """cnn-ours' predictor (used on the test set) and its train.json val figure both average each image's
    prediction with its mirror image's; switching the setting off gives the plain single-view prediction."""
    out = tmp_path / "cnn-ours"
    train.run("cnn-ours", split_dir, out, params_for("cnn-ours", test_time_flip=True), verbose=0)
    meta = json.loads((out / "train.json").read_text())
    xv, yv = small_split["val"]
    xs = registry.preprocess("keras", xv)
    model = registry.load_keras(out / registry.KERAS_FILE)
    single = np.asarray(model.predict(xs, verbose=0))
    mirror = np.asarray(model.predict(xs[:, :, ::-1], verbose=0))
    assert not np.allclose(single, mirror, atol=1e-3)  # the flip really changes the input
    averaged = (single + mirror) / 2
    np.testing.assert_allclose(registry.load_predictor(out)(xv), averaged, atol=1e-5)
    assert meta["val_accuracy"] == pytest.approx((averaged.argmax(1) == yv).mean())
    assert meta["val_accuracy_single_view"] == pytest.approx((single.argmax(1) == yv).mean(), abs=1 / len(yv))

    meta["hyperparams"]["test_time_flip"] = False
    (out / "train.json").write_text(json.dumps(meta))
    np.testing.assert_allclose(registry.load_predictor(out)(xv), single, atol=1e-5)


def test_tf_data_pipeline_shows_every_image_once_per_epoch_in_a_new_order(small_split):
    """The training input is one endless iterator (repeat + steps_per_epoch): each `steps_per_epoch` batches
    must still be exactly one pass over the training images, reshuffled every pass."""
    if train.keras_backend() != "tensorflow":
        pytest.skip("tf.data is used with the TensorFlow backend only")
    x, y = small_split["train"]
    fit_kw, kind = train._datasets(x, y, *small_split["val"], batch_size=64, seed=0, use_tf_data=True)
    assert kind == "tf.data" and fit_kw["steps_per_epoch"] == 10  # 600 images: 9 batches of 64 and one of 24
    batches = iter(fit_kw["x"])
    passes = []
    for _ in range(3):
        xs, ys = zip(*(next(batches) for _ in range(fit_kw["steps_per_epoch"])))
        images = np.rint(np.concatenate(xs)[..., 0] * 255).astype(np.uint8)
        passes.append((images, np.concatenate(ys).argmax(1)))
    rows = sorted(r.tobytes() + bytes([c]) for r, c in zip(x.reshape(len(x), -1), y))
    for images, labels in passes:
        assert len(images) == len(x)
        assert sorted(r.tobytes() + bytes([c]) for r, c in zip(images.reshape(len(x), -1), labels)) == rows
    assert not np.array_equal(passes[0][0], passes[1][0]) and not np.array_equal(passes[1][0], passes[2][0])


@pytest.mark.slow   # two whole trainings, compared bit for bit
def test_keras_training_is_bit_reproducible_on_one_machine(split_dir, tmp_path):
    """The README promises it: same seed, data and machine -> identical weights (oneDNN kernels on)."""
    weights = []
    for run in ("a", "b"):
        out = tmp_path / run / "cnn-ours"
        train.run("cnn-ours", split_dir, out, params_for("cnn-ours", epochs=2), verbose=0)
        weights.append([np.asarray(w) for w in registry.load_keras(out / registry.KERAS_FILE).weights])
    assert len(weights[0]) == len(weights[1])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_onednn_cpu_kernels_default_on_but_user_setting_wins():
    code = "import os, pipeline; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "1"
    assert subprocess.run([sys.executable, "-c", code], env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
                          capture_output=True, text=True, check=True).stdout.strip() == "0"


@pytest.mark.parametrize("name", SKLEARN_MODELS)
def test_sklearn_model_trains_and_follows_contract(name, split_dir, small_split, tmp_path):
    out = tmp_path / "models" / name
    train.run(name, split_dir, out, params_for(name))
    meta = check_contract(out, name, epochs=1)
    assert meta["backend"] == "sklearn" and meta["device"] == "CPU"
    floor = 0.3 if name == "gaussian-nb" else 0.5
    assert meta["val_accuracy"] > floor, meta  # chance is 0.10
    check_predictor(out, small_split, meta)


def test_exact_gradient_boosting_flag_clears_stand_in(split_dir, tmp_path):
    params = params_for("gradient-boosting", n_estimators=2, max_depth=2)
    params["train"]["exact_gradient_boosting"] = True
    meta = train.run("gradient-boosting", split_dir, tmp_path / "gb", params)
    assert meta["stand_in_for"] is None


class Interrupt(Exception):
    pass


def test_resume_from_checkpoint(split_dir, tmp_path):
    import keras

    class FailAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Interrupt("simulated crash after epoch 1")

    name, out = "paper-b-cnn", tmp_path / "models" / "paper-b-cnn"
    params = params_for(name, epochs=2)
    with pytest.raises(Interrupt):
        train.run(name, split_dir, out, params, callbacks=[FailAfterFirstEpoch()], verbose=0)
    # atomic output: nothing half-written; the checkpoint holds epoch 1
    assert not out.exists()
    assert not out.parent.exists() or not [p for p in out.parent.iterdir() if p.name.startswith(f".{name}")]
    ckpt = train.run_dir(train.CHECKPOINT_ROOT, name, 0)
    state = json.loads((ckpt / train.CKPT_STATE).read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1

    meta = train.run(name, split_dir, out, params, verbose=0)
    assert meta["resumed_from_epoch"] == 1
    check_contract(out, name, epochs=2)
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["loss"]) == pytest.approx(state["history"][0]["loss"])  # epoch 1 kept, not retrained
    assert not ckpt.exists()


def test_stale_checkpoint_is_ignored(split_dir, tmp_path):
    name, out = "paper-b-cnn", tmp_path / "m" / "paper-b-cnn"
    ckpt = train.run_dir(train.CHECKPOINT_ROOT, name, 0)
    ckpt.mkdir(parents=True)
    (ckpt / train.CKPT_STATE).write_text(json.dumps({"fingerprint": "other", "epoch": 1, "history": []}))
    meta = train.run(name, split_dir, out, params_for(name), verbose=0)
    assert meta["resumed_from_epoch"] is None and not ckpt.exists()


def test_load_predictor_refuses_pickles_and_untrusted_code(tmp_path):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    import skops.io as sio

    # a pickle disguised as a skops file
    d = tmp_path / "pickled"
    d.mkdir()
    (d / registry.SKOPS_FILE).write_bytes(pickle.dumps({"evil": True}))
    with pytest.raises(PipelineError, match="not a valid skops"):
        registry.load_predictor(d)
    # a real skops file that references an arbitrary callable
    d = tmp_path / "untrusted"
    d.mkdir()
    sio.dump(Pipeline([("f", FunctionTransformer(func=eval))]), d / registry.SKOPS_FILE)
    with pytest.raises(PipelineError, match="untrusted"):
        registry.load_predictor(d)
    # a pickle disguised as a Keras file
    d = tmp_path / "keras-pickle"
    d.mkdir()
    (d / registry.KERAS_FILE).write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(PipelineError):
        registry.load_predictor(d)


def test_load_predictor_refuses_keras_lambda(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda t: t * 2),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    d = tmp_path / "lambda"
    d.mkdir()
    model.save(d / registry.KERAS_FILE)
    with pytest.raises(PipelineError, match="refused"):
        registry.load_predictor(d)


def test_load_predictor_needs_a_model(tmp_path):
    with pytest.raises(PipelineError, match="exactly one"):
        registry.load_predictor(tmp_path)


def test_cli(split_dir, tmp_path):
    params = tmp_path / "params.yaml"
    import yaml
    params.write_text(yaml.safe_dump(params_for("gaussian-nb")))
    out = tmp_path / "models" / "gaussian-nb"
    plot = tmp_path / "plots" / "history" / "gaussian-nb.csv"
    proc = run_cli("train", "--params", str(params), "--model", "gaussian-nb", "--data", str(split_dir),
                   "--out", str(out), "--plot", str(plot), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.skops").exists()
    # The DVC plot file (outside the model dir, which DVC requires) is the model's history.
    assert plot.read_bytes() == (out / "history.csv").read_bytes()
    bad = run_cli("train", "--params", str(params), "--model", "nope", "--data", str(split_dir), "--out", str(out))
    assert bad.returncode != 0 and "valid model names" in bad.stderr and "Traceback" not in bad.stderr


def test_model_without_params_entry_is_a_clear_error(split_dir, tmp_path):
    params = {"train": shipped_section("train", models=["gaussian-nb"], seeds=[0]), "models": {}}
    with pytest.raises(PipelineError, match=r"models\.gaussian-nb") as err:
        train.run("gaussian-nb", split_dir, tmp_path / "models" / "gaussian-nb", params)
    assert "priors" in err.value.hint
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "ten", "`models.cnn-dropout-1.epochs` must be an integer, got 'ten'"),
    ("filters", [32, "x"], "`models.cnn-dropout-1.filters` must be a list of an integer"),
    ("dropout", True, "`models.cnn-dropout-1.dropout` must be a number, got True"),
    ("learning_rate", 1, None),                       # YAML's 1 is a valid number
])
def test_hyperparameter_of_the_wrong_type_is_a_params_error(split_dir, tmp_path, key, value, message):
    params = params_for("cnn-dropout-1", **{key: value})
    if message is None:
        registry.get("cnn-dropout-1").hyperparams(params["models"]["cnn-dropout-1"])
        return
    with pytest.raises(PipelineError, match=re.escape(message)):
        train.run("cnn-dropout-1", split_dir, tmp_path / "out", params, verbose=0)
    assert not (tmp_path / "out").exists()


def test_train_section_types_and_seeds_are_checked(split_dir, tmp_path):
    for seeds, message in (("42", "`train.seeds` must be a list of an integer"), ([], "non-empty"),
                           ([1, 1], "distinct"), ([1.5], "must be a list of an integer")):
        params = {**params_for("gaussian-nb"), "train": shipped_section("train", models=["gaussian-nb"], seeds=seeds)}
        with pytest.raises(PipelineError, match=re.escape(message)):
            train.run("gaussian-nb", split_dir, tmp_path / "out", params)


def test_cli_seed_selects_the_run_and_its_default_directory(split_dir, tmp_path):
    import yaml

    params = params_for("gaussian-nb")
    params["train"]["seeds"] = [7, 8]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_cli("train", "--model", "gaussian-nb", "--seed", "8", "--data", str(split_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "models/gaussian-nb/seed-8/train.json").read_text())["seed"] == 8
    proc = run_cli("train", "--model", "gaussian-nb", "--data", str(split_dir), cwd=tmp_path)   # first seed
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "models/gaussian-nb/seed-7/train.json").read_text())["seed"] == 7
