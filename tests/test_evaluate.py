"""evaluate stage: metric functions vs scikit-learn on known inputs, and the stage on a real tiny model."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from sklearn import metrics as skm
from sklearn.naive_bayes import GaussianNB

from pipeline import metrics
from pipeline.training import evaluate as ev
from pipeline import io
from pipeline.errors import PipelineError
from pipeline.models import registry
from pipeline.schema import CLASS_NAMES
from tests.conftest import run_cli, shipped_params


@pytest.fixture(scope="module")
def nb_case(small_split):
    """Real predictions: GaussianNB fitted on 600 real training images, scored on 300 real test images."""
    (x, y), (xt, yt) = small_split["train"], small_split["test"]
    model = GaussianNB().fit(registry.preprocess("sklearn", x), y)
    probs = model.predict_proba(registry.preprocess("sklearn", xt))
    return yt, probs, probs.argmax(1), model


def test_accuracy_confusion_and_report_match_sklearn(nb_case):
    y, probs, pred, _ = nb_case
    assert metrics.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    cm = metrics.confusion_matrix(y, pred)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=range(10)))
    assert cm.shape == (10, 10) and metrics.confusion_matrix(y[:3], pred[:3]).shape == (10, 10)  # absent classes too
    report = metrics.per_class_report(y, pred)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
    for i, name in enumerate(CLASS_NAMES):
        assert report[name]["precision"] == pytest.approx(p[i])
        assert report[name]["recall"] == pytest.approx(r[i])
        assert report[name]["f1"] == pytest.approx(f[i])
        assert report[name]["support"] == s[i]
    macro = metrics.macro_average(report)
    assert macro["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))


def test_report_zero_division_matches_sklearn():
    # class 2 is never predicted and class 3 never occurs: sklearn's zero_division=0 convention
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 1, 3])
    report = metrics.per_class_report(y, pred)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
    assert [report[n]["precision"] for n in CLASS_NAMES] == pytest.approx(p)
    assert [report[n]["recall"] for n in CLASS_NAMES] == pytest.approx(r)
    assert [report[n]["f1"] for n in CLASS_NAMES] == pytest.approx(f)


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
def test_log_loss_matches_sklearn(nb_case):
    y, probs, _, _ = nb_case
    assert metrics.log_loss(y, probs) == pytest.approx(skm.log_loss(y, probs, labels=range(10)), rel=1e-6)  # float32 sums
    as64 = probs.astype(np.float64)  # the clipping eps follows the dtype, as in scikit-learn
    assert metrics.log_loss(y, as64) == pytest.approx(skm.log_loss(y, as64, labels=range(10)), rel=1e-9)
    hand = np.array([[0.7, 0.2, 0.1] + [0] * 7, [0.1, 0.8, 0.1] + [0] * 7])
    assert metrics.log_loss(np.array([0, 2]), hand) == pytest.approx(-(math.log(0.7) + math.log(0.1)) / 2)


def test_one_hot_votes_get_no_log_loss():
    y = np.array([0, 1, 2, 3])
    one_hot = np.eye(10, dtype=np.float32)[[0, 1, 2, 9]]
    assert metrics.is_one_hot(one_hot)
    result = ev.evaluate_predictions(y, one_hot)
    assert result["log_loss"] is None and result["probabilities"].startswith("one-hot")
    assert result["accuracy"] == 0.75 and result["correct"] == 3 and result["errors"] == 1
    soft = np.full((4, 10), 0.1)
    assert not metrics.is_one_hot(soft) and ev.evaluate_predictions(y, soft)["log_loss"] == pytest.approx(math.log(10))


@pytest.mark.parametrize("k, n, low, high", [
    (50, 100, 0.40383, 0.59617),          # symmetric textbook case
    (0, 10, 0.0, 3.8415 / 13.8415),        # k = 0: upper bound z^2/(n+z^2)
    (10, 10, 10 / 13.8415, 1.0),           # k = n: lower bound n/(n+z^2)
    (9256, 10000, 0.92030, 0.93060),       # paper B's 92.56% on 10k images
])
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = metrics.wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert lo <= k / n <= hi


def test_wilson_interval_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.wilson_interval(5, 0)
    with pytest.raises(ValueError):
        metrics.wilson_interval(11, 10)


def test_mcnemar_hand_checked_table():
    # 10 images; A right & B wrong on 1 (b), A wrong & B right on 6 (c), both right on 3.
    y = np.zeros(10, dtype=int)
    a = np.array([0, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    b = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    result = metrics.mcnemar(y, a, b)
    assert (result["b"], result["c"]) == (1, 6)
    assert result["p_exact"] == pytest.approx(2 * (1 + 7) / 2 ** 7)        # = 0.125
    assert result["chi2_cc"] == pytest.approx((abs(1 - 6) - 1) ** 2 / 7)     # = 16/7
    assert result["p_chi2_cc"] == pytest.approx(0.13057, abs=1e-4)
    swapped = metrics.mcnemar(y, b, a)
    assert (swapped["b"], swapped["c"]) == (6, 1) and swapped["p_exact"] == pytest.approx(result["p_exact"])
    same = metrics.mcnemar(y, a, a)
    assert same["p_exact"] == 1.0 and same["b"] == same["c"] == 0


def test_holm_adjustment():
    assert metrics.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert metrics.holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_throughput_skips_warmup_batch():
    assert metrics.throughput([(4, 10.0), (4, 1.0), (4, 1.0), (2, 0.5)], 4) == pytest.approx(4.0)
    assert metrics.throughput([(3, 1.5)], 4) == pytest.approx(2.0)  # too few full batches: use all


def _write_nb_model(model_dir, model, name="gaussian-nb"):
    import skops.io as sio

    model_dir.mkdir(parents=True)
    sio.dump(model, model_dir / registry.SKOPS_FILE)
    spec = registry.get(name)
    meta = {"model": name, "family": spec.family, "source": spec.source, "train_time_s": 0.05, "epochs": 1,
            "device": "CPU", "backend": "sklearn", "seed": 42, "params_count": 15700, "val_accuracy": 0.6,
            "val_loss": 5.0, "train_accuracy": 0.62, "train_loss": 4.0, "hyperparams": {},
            "stand_in_for": spec.stand_in_for}
    (model_dir / "train.json").write_text(json.dumps(meta))


def test_evaluate_model_writes_consistent_outputs(nb_case, small_split, tmp_path):
    y, probs, pred, model = nb_case
    xt = small_split["test"][0]
    _write_nb_model(tmp_path / "models" / "gaussian-nb", model)
    metrics, got = ev.evaluate_model("gaussian-nb", tmp_path / "models" / "gaussian-nb", xt, y, batch_size=128,
                                     latency_calls=3, warmup_calls=1)
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
    ev.write_outputs(tmp_path / "metrics", "gaussian-nb", 42, metrics, y, got)

    saved = io.read_json(tmp_path / "metrics" / "gaussian-nb" / "seed-42.json")
    assert saved["test"]["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert saved["test"]["n"] == len(y) == 300
    assert saved["test"]["accuracy_ci95_low"] < saved["test"]["accuracy"] < saved["test"]["accuracy_ci95_high"]
    assert saved["test"]["log_loss"] == pytest.approx(skm.log_loss(y, got, labels=range(10)), rel=1e-6)
    assert saved["train"]["train_time_s"] == 0.05 and saved["params_count"] == 15700
    inf = saved["inference"]
    assert inf["latency_batch1_median_ms"] > 0 and inf["throughput_img_per_s"] > 0 and inf["latency_calls"] == 3
    assert inf["device"].startswith(("CPU", "GPU"))
    assert saved["model_size_bytes"] == (tmp_path / "models" / "gaussian-nb" / "model.skops").stat().st_size

    arrays = io.load_arrays(tmp_path / "metrics" / "gaussian-nb" / "seed-42.predictions.npz")
    np.testing.assert_array_equal(arrays["y_true"], y)
    np.testing.assert_array_equal(arrays["y_pred"], pred)
    with open(tmp_path / "metrics" / "gaussian-nb" / "seed-42.confusion.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300 and set(rows[0]) == {"actual", "predicted"}
    assert sum(r["actual"] == r["predicted"] for r in rows) == saved["test"]["correct"]
    assert rows[0]["actual"] == CLASS_NAMES[y[0]]


def test_evaluate_refuses_train_json_of_another_model(nb_case, small_split, tmp_path):
    _write_nb_model(tmp_path / "gaussian-nb", nb_case[3], name="gaussian-nb")
    with pytest.raises(PipelineError, match="not `knn`"):
        ev.evaluate_model("knn", tmp_path / "gaussian-nb", small_split["test"][0], nb_case[0], batch_size=128,
                          latency_calls=1, warmup_calls=0)


def _cli_workspace(tmp_path, small_split, model):
    io.save_arrays(tmp_path / "test.npz", x=small_split["test"][0], y=small_split["test"][1])
    train = {**shipped_params()["train"], "models": ["gaussian-nb"], "seeds": [42]}
    params = {"evaluate": {"batch_size": 128, "latency_calls": 3, "warmup_calls": 1}, "train": train}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _write_nb_model(tmp_path / "models" / "gaussian-nb" / "seed-42", model)


def test_cli_evaluate(nb_case, small_split, tmp_path):
    _cli_workspace(tmp_path, small_split, nb_case[3])
    proc = run_cli("evaluate", "--model", "gaussian-nb", "--models-dir", "models", "--test", "test.npz",
                   "--out", "metrics", cwd=tmp_path, check=True)
    assert "test accuracy" in proc.stderr
    for suffix in (".json", ".predictions.npz", ".confusion.csv"):
        assert (tmp_path / "metrics" / "gaussian-nb" / f"seed-42{suffix}").exists()
    assert json.loads((tmp_path / "metrics/gaussian-nb/seed-42.json").read_text())["seed"] == 42


def test_cli_evaluate_missing_model_is_a_clear_error(nb_case, small_split, tmp_path):
    _cli_workspace(tmp_path, small_split, nb_case[3])
    proc = run_cli("evaluate", "--model", "knn", "--models-dir", "models", "--test", "test.npz",
                   "--out", "metrics", cwd=tmp_path)
    assert proc.returncode == 2
    assert "models/knn" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics").exists()
