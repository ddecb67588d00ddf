"""The JAX backend and the GPU check (issue 31), proven on the CPU.

One module fixture runs the command prepared for a lent GPU machine, scripts/gpu-check.sh, here on the CPU with
KERAS_BACKEND=jax and TensorFlow hidden (tests/no_tensorflow: an import of it fails as on the GPU machine, whose
image has none, and every attempt is logged with its call stack). It trains cnn-ours (its GPU variant, forced with
train.gpu_variant=true) and cnn-dropout-1 (paper A) for one epoch on a 512/256 stratified slice of the real
training data, and evaluates each on the first 256 official test images, through the real train and evaluate
CLIs, and prints its table. XLA_FLAGS lowers XLA's compiler optimisation: on this CPU compiling the training step
costs more than running it, and the dry run checks that the code runs and what it writes, not speed.
About 25 s of CPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline import io
from pipeline.models import registry
from tests.conftest import REPO

MODELS = ("cnn-ours", "cnn-dropout-1")
SEED = 42
TEST_ROWS = 256
# Probabilities of the same weights under two backends: identical argmax and every probability within this.
CROSS_BACKEND_TOL = 1e-5
DRY_RUN = [
    "--seeds", str(SEED), "--models", *MODELS, "--test-rows", str(TEST_ROWS),
    "--set", "split.train_size=512", "--set", "split.val_size=256",
    "--set", "train.gpu_variant=true", "--set", "models.cnn-ours.gpu.epochs=1",
    "--set", "models.cnn-ours.batch_size=64", "--set", "models.cnn-dropout-1.epochs=1",
    "--set", "models.cnn-dropout-1.batch_size=64",
    "--set", "evaluate.latency_calls=3", "--set", "evaluate.warmup_calls=1",
]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gpu-check")
    work, out, tf_log = root / "work", root / "out", root / "tensorflow-imports.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH", "GPU_CHECK_IDX")}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(REPO / "tests" / "no_tensorflow"), NO_TENSORFLOW_LOG=str(tf_log),
               GPU_CHECK_WORK=str(work), GPU_BUNDLE=str(root / "no-bundle"), OUT=str(out),
               XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    proc = subprocess.run([str(REPO / "scripts" / "gpu-check.sh"), *DRY_RUN], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"proc": proc, "work": work, "out": out, "tf_log": tf_log,
            "report": json.loads((out / "gpu-check.json").read_text())}


def test_dry_run_prints_one_table_of_every_model_and_seed(dry_run):
    stdout, report = dry_run["proc"].stdout, dry_run["report"]
    assert report["environment"]["backend"] == "jax" and report["environment"]["jax_devices"] == ["cpu:cpu"]
    assert report["sizes"] == {"train": 512, "val": 256, "test": TEST_ROWS}
    table = stdout[stdout.index("| model | seed | test accuracy (%) | training s | images/s | device |"):]
    assert (dry_run["out"] / "gpu-check.md").read_text().strip() == table.strip()
    for model in MODELS:
        row = next(r for r in report["rows"] if r["model"] == model)
        metrics = json.loads((dry_run["work"] / "metrics" / model / f"seed-{SEED}.json").read_text())
        meta = json.loads((dry_run["work"] / "models" / model / f"seed-{SEED}" / "train.json").read_text())
        assert row["status"] == "ok" and row["seed"] == SEED and row["backend"] == "jax" and row["device"] == "CPU"
        assert row["test_accuracy"] == metrics["test"]["accuracy"] and metrics["test"]["n"] == TEST_ROWS
        assert row["train_s"] == meta["train_time_s"] > 0 and meta["epochs"] == 1
        assert row["images_per_s"] == pytest.approx(512 / meta["train_time_s"])
        shown = "cnn-ours (GPU variant)" if model == "cnn-ours" else model
        assert re.search(rf"^\| {re.escape(shown)} \| {SEED} \| {100 * row['test_accuracy']:.2f} \| "
                         rf"{meta['train_time_s']:.1f} \| [\d,]+ \| CPU \|$", table, re.M), table
        # one epoch on 512 images beats chance (10%) on the test images: it learned something real
        assert row["test_accuracy"] > 0.15


def test_tensorflow_is_never_imported_under_jax(dry_run):
    """TensorFlow is hidden, as on the GPU machine, and nothing needed it: the only attempts are Keras's own
    optional probe (keras.utils.set_random_seed asks whether TensorFlow is there, to seed it too), never the
    project's code; train logs that train.tf_data (TensorFlow's) does not apply and feeds NumPy arrays."""
    assert dry_run["report"]["environment"]["tensorflow_imported"] is False
    text = dry_run["tf_log"].read_text() if dry_run["tf_log"].exists() else ""
    attempts = re.split(r"^=== import ", text, flags=re.M)[1:]
    for attempt in attempts:
        frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', attempt)
        caller = next(f for f in reversed(frames) if "importlib" not in f[0] and "no_tensorflow" not in f[0])
        assert caller[0].endswith(os.path.join("keras", "src", "utils", "module_utils.py")), attempt
        assert any(f[1] == "available" for f in frames), attempt
    for model in MODELS:
        log = (dry_run["work"] / "logs" / f"{model}-seed-{SEED}.log").read_text()
        assert f"train [{model}]: train.tf_data is for the TensorFlow backend; keras/jax reads NumPy arrays" in log
        assert f"train [{model}]: keras/jax on CPU" in log and "input numpy" in log


def test_cnn_ours_trains_its_gpu_variant_under_jax(dry_run):
    meta = json.loads((dry_run["work"] / "models" / "cnn-ours" / f"seed-{SEED}" / "train.json").read_text())
    shipped = registry.get("cnn-ours").hyperparams(
        yaml.safe_load((REPO / "params.yaml").read_text())["models"]["cnn-ours"])
    assert meta["gpu_variant"] is True
    expected = {**{k: v for k, v in shipped.items() if k != "gpu"}, **shipped["gpu"], "epochs": 1, "batch_size": 64}
    assert meta["hyperparams"] == expected
    log = (dry_run["work"] / "logs" / f"cnn-ours-seed-{SEED}.log").read_text()
    assert "train [cnn-ours]: GPU variant (models.cnn-ours.gpu) on (train.gpu_variant: true)" in log


def test_predictions_agree_across_backends(dry_run):
    """The weights JAX trained and saved, loaded under TensorFlow (this process), predict what JAX predicted."""
    import keras

    assert keras.backend.backend() == "tensorflow"
    x = io.load_arrays(dry_run["work"] / "data" / "processed" / "test.npz")["x"]
    for model in MODELS:
        run = dry_run["work"] / "models" / model / f"seed-{SEED}"
        under_jax = io.load_arrays(dry_run["work"] / "metrics" / model / f"seed-{SEED}.predictions.npz")["probs"]
        under_tf = registry.load_predictor(run)(x)
        assert under_tf.shape == under_jax.shape == (TEST_ROWS, 10)
        np.testing.assert_array_equal(under_tf.argmax(1), under_jax.argmax(1))
        np.testing.assert_allclose(under_tf, under_jax, rtol=0, atol=CROSS_BACKEND_TOL)
    cnn = registry.load_keras(dry_run["work"] / "models" / "cnn-ours" / f"seed-{SEED}" / registry.KERAS_FILE)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in cnn.layers) == 5   # convs_per_block [1, 2, 2]
    assert any(layer.name == "cutout" for layer in cnn.layers)


def test_gpu_check_without_keras_or_data_says_what_to_carry(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHON="python3", GPU_BUNDLE=str(tmp_path / "none"), GPU_CHECK_WORK=str(tmp_path / "work"))
    probe = subprocess.run(["python3", "-c", "import keras"], capture_output=True, env=env)
    if probe.returncode == 0:
        pytest.skip("the system python3 has keras")
    proc = subprocess.run([str(REPO / "scripts" / "gpu-check.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "error [gpu-check]: keras cannot be imported" in proc.stderr and "scripts/gpu-bundle.sh" in proc.stderr
