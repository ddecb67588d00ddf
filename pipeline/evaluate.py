"""evaluate stage: score ONE trained model on the official 10,000-image test set (and only there).

    python -m pipeline evaluate --model NAME --seed SEED --models-dir models --test data/processed/test.npz \
        --out metrics

Reads the run models/<name>/seed-<seed>/ and writes, atomically (pipeline.io), under metrics/<name>/:
  seed-<seed>.json                 test accuracy (+ Wilson 95% CI), log loss where the probabilities are
                                   real, per-class precision/recall/F1/support, macro averages, training
                                   time/params/device (copied from train.json), inference latency and
                                   throughput, model size on disk. (publish condenses every run's
                                   accuracy into accuracy.json, the DVC metric.)
  seed-<seed>.predictions.npz      y_true, y_pred, probs: publish runs McNemar tests and draws figures
                                   from these without reloading any model.
  seed-<seed>.confusion.csv        one row per test image (actual,predicted class names): DVC `plots`
                                   with the `confusion` template.

The metric functions below are pure (arrays in, numbers out): scikit-learn's and scipy's, with the label set
and conventions fixed.
Not about: training (pipeline.train) or comparing models (pipeline.publish).
"""

from __future__ import annotations

import csv
import io as _stdio
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline import io
from pipeline.device import describe_device
from pipeline.errors import PipelineError
from pipeline.schema import CLASS_NAMES, IMAGE_SIDE, N_CLASSES

Predictor = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------ pure metrics
# Thin wrappers over scikit-learn/scipy: they fix the label set to all 10 classes (a test slice may lack one) and
# the conventions the report states (zero_division=0, Wilson interval). scikit-learn is imported on first use.
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"need equally long, non-empty label arrays (got {len(y_true)} and {len(y_pred)})")
    return float(accuracy_score(y_true, y_pred))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Counts; rows = actual class, columns = predicted class."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.int64)


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray,
                     class_names: tuple[str, ...] = CLASS_NAMES) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class; 0 where undefined (a class never predicted or absent)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(class_names)), zero_division=0)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(class_names)
    }


def macro_average(report: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over classes (scikit-learn's average="macro")."""
    keys = ("precision", "recall", "f1")
    return {k: float(np.mean([row[k] for row in report.values()])) for k in keys}


def is_one_hot(probs: np.ndarray) -> bool:
    """True when every row is a hard 0/1 vote: such 'probabilities' carry no confidence information."""
    probs = np.asarray(probs)
    return bool(np.all((probs == 0) | (probs == 1)) and np.all(probs.sum(axis=1) == 1))


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class. Probabilities are clipped at the machine epsilon of their
    own dtype (scikit-learn's rule), which bounds what one confident mistake can cost."""
    from sklearn.metrics import log_loss as sk_log_loss

    return float(sk_log_loss(np.asarray(y_true, dtype=np.int64), probs, labels=np.arange(N_CLASSES)))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved near 0 and 1, unlike the Wald interval)."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n], got {successes} of {n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test on paired predictions of two models over the same test images.

    b = images A gets right and B gets wrong, c = the reverse. The exact two-sided binomial p-value
    (b ~ Binomial(b+c, 1/2)) is the primary result; the chi-square statistic with continuity
    correction (|b-c|-1)^2/(b+c) and its p-value are reported alongside.
    """
    from scipy.stats import binomtest, chi2

    y_true, pred_a, pred_b = (np.asarray(a) for a in (y_true, pred_a, pred_b))
    ok_a, ok_b = pred_a == y_true, pred_b == y_true
    b = int(np.sum(ok_a & ~ok_b))
    c = int(np.sum(~ok_a & ok_b))
    n = b + c
    if n == 0:
        return {"b": 0, "c": 0, "p_exact": 1.0, "chi2_cc": 0.0, "p_chi2_cc": 1.0}
    p_exact = float(binomtest(b, n, 0.5, alternative="two-sided").pvalue)
    stat = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "p_exact": min(1.0, p_exact), "chi2_cc": float(stat),
            "p_chi2_cc": float(chi2.sf(stat, df=1))}


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values (family-wise error control over several tests)."""
    m = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[idx]))
        adjusted[idx] = running
    return [float(a) for a in adjusted]


# ------------------------------------------------------------------------------ timing
def predict_in_batches(predictor: Predictor, x: np.ndarray, batch_size: int,
                       label: str | None = None) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Predict all of x in chunks; return probabilities and [(chunk size, seconds)] per chunk.

    label: say progress with a time estimate under this label every ~10 s (slow predictors, e.g. KNN, would
    otherwise look hung)."""
    from pipeline.progress import BatchProgress

    progress = BatchProgress(label, len(x)) if label else None
    chunks, timings = [], []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        t0 = time.perf_counter()
        out = np.asarray(predictor(batch))
        timings.append((len(batch), time.perf_counter() - t0))
        chunks.append(out)
        if progress is not None:
            progress.update(len(batch))
    probs = np.concatenate(chunks, axis=0)
    if probs.shape != (len(x), N_CLASSES):
        raise PipelineError(f"the predictor returned shape {probs.shape}, expected ({len(x)}, {N_CLASSES})")
    return probs, timings


def throughput(timings: list[tuple[int, float]], batch_size: int) -> float:
    """Images per second over full-size batches, leaving out the first (warm-up: graph tracing, caches).

    Falls back to all batches when there are fewer than two full ones (tiny test sets)."""
    full = [(n, s) for n, s in timings if n == batch_size]
    use = full[1:] if len(full) >= 2 else timings
    seconds = sum(s for _, s in use)
    return float(sum(n for n, _ in use) / seconds) if seconds > 0 else float("inf")


def batch1_latency(predictor: Predictor, x: np.ndarray, calls: int, warmup: int) -> dict[str, float]:
    """Median and 90th-percentile wall time (ms) of single-image calls, after `warmup` untimed calls."""
    for i in range(warmup):
        predictor(x[i % len(x)][None])
    times = []
    for i in range(calls):
        img = x[(warmup + i) % len(x)][None]
        t0 = time.perf_counter()
        predictor(img)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "calls": calls}


def model_size_bytes(model_dir: Path) -> int:
    """Bytes of the serialised model itself (model.keras / model.skops), not of train.json/history."""
    files = [p for p in model_dir.iterdir() if p.is_file() and p.name.startswith("model.")]
    if not files:
        raise PipelineError(f"{model_dir}: no model.keras / model.skops file",
                            hint="run `python -m pipeline train --model NAME` first")
    return sum(p.stat().st_size for p in files)


# ------------------------------------------------------------------------------ core
def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """All test-set quality metrics from true labels and predicted probabilities (pure)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probs).argmax(axis=1)
    correct = int(np.sum(y_pred == y_true))
    n = int(len(y_true))
    lo, hi = wilson_interval(correct, n, confidence)
    hard = is_one_hot(probs)
    report = per_class_report(y_true, y_pred)
    return {
        "n": n,
        "correct": correct,
        "errors": n - correct,
        "accuracy": correct / n,
        "accuracy_ci95_low": lo,
        "accuracy_ci95_high": hi,
        "ci_method": f"Wilson score interval, {confidence:.0%}",
        "probabilities": "one-hot votes (no predict_proba)" if hard else "predicted class probabilities",
        # A one-hot 'probability' of 0 for the true class makes log loss depend only on the clipping eps.
        "log_loss": None if hard else log_loss(y_true, probs),
        "macro": macro_average(report),
        "per_class": report,
    }


def evaluate_model(name: str, model_dir: Path, x: np.ndarray, y: np.ndarray, *, batch_size: int,
                   latency_calls: int, warmup_calls: int,
                   loader: Callable[[Path], Predictor] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Load the model in `model_dir`, predict the test set, time inference. Returns (metrics, probs).

    batch_size, latency_calls and warmup_calls are params.yaml `evaluate` (no defaults: that file is their home)."""
    from pipeline.models import registry

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PipelineError(f"{model_dir}: trained model directory not found",
                            hint=f"run `dvc repro train@{name}-<seed>` (or python -m pipeline train --model {name})")
    meta = registry.read_train_meta(model_dir)
    if meta.get("model") not in (None, name):
        raise PipelineError(f"{model_dir}/train.json describes model `{meta.get('model')}`, not `{name}`")
    spec = registry.get(name)
    family = meta.get("family") or spec.family
    load_started = time.perf_counter()
    predictor = (loader or registry.load_predictor)(model_dir)
    load_s = time.perf_counter() - load_started

    latency = batch1_latency(predictor, x, latency_calls, warmup_calls)
    probs, timings = predict_in_batches(predictor, x, batch_size, label=f"evaluate [{name}]: predicting the test set")
    metrics = {
        "model": name,
        "seed": meta.get("seed"),
        "family": family,
        "source": meta.get("source", spec.source),
        "stand_in_for": meta.get("stand_in_for", spec.stand_in_for),
        "test": evaluate_predictions(y, probs),
        "train": {k: meta.get(k) for k in ("train_time_s", "epochs", "device", "backend", "seed",
                                           "params_count", "train_accuracy", "train_loss",
                                           "val_accuracy", "val_loss")},
        "inference": {
            "device": describe_device(family),
            "load_s": load_s,
            "latency_batch1_median_ms": latency["median_ms"],
            "latency_batch1_p90_ms": latency["p90_ms"],
            "latency_calls": latency["calls"],
            "throughput_batch_size": batch_size,
            "throughput_img_per_s": throughput(timings, batch_size),
            "predict_all_s": float(sum(s for _, s in timings)),
        },
        "params_count": meta.get("params_count"),
        "model_size_bytes": model_size_bytes(model_dir),
    }
    return metrics, probs


def confusion_csv(y_true: np.ndarray, y_pred: np.ndarray) -> str:
    """One row per test image, class names as values: the layout DVC's `confusion` template expects."""
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    names = np.asarray(CLASS_NAMES)
    writer.writerows(zip(names[np.asarray(y_true, dtype=int)], names[np.asarray(y_pred, dtype=int)]))
    return buf.getvalue()


def output_paths(out_dir: Path, name: str, seed: int) -> dict[str, Path]:
    """The evaluate stage's files for one (model, seed) run: <out_dir>/<name>/seed-<seed>.{json,...}."""
    stem = Path(out_dir) / name / f"seed-{seed}"
    return {"metrics": stem.with_suffix(".json"), "predictions": stem.with_suffix(".predictions.npz"),
            "confusion": stem.with_suffix(".confusion.csv")}


def write_outputs(out_dir: Path, name: str, seed: int, metrics: dict[str, Any], y_true: np.ndarray,
                  probs: np.ndarray) -> None:
    """Predictions and confusion first, the metrics JSON last: a complete JSON implies complete siblings."""
    paths = output_paths(Path(out_dir), name, seed)
    y_pred = probs.argmax(axis=1).astype(np.uint8)
    io.save_arrays(paths["predictions"], y_true=np.asarray(y_true, dtype=np.uint8), y_pred=y_pred,
                   probs=np.asarray(probs, dtype=np.float32))
    io.write_text(paths["confusion"], confusion_csv(y_true, y_pred))
    io.write_json(paths["metrics"], metrics)


def load_test_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = io.load_arrays(path)
    if "x" not in data or "y" not in data:
        raise PipelineError(f"{path}: expected arrays `x` and `y`, found {sorted(data)}")
    x, y = data["x"], data["y"]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or len(x) != len(y) or len(y) == 0:
        raise PipelineError(f"{path}: expected x of shape (N, 28, 28) and N labels, got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= N_CLASSES:
        raise PipelineError(f"{path}: labels must lie in 0..{N_CLASSES - 1}")
    return x, y


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    parser.add_argument("--model", required=True, help="registered model name (see params.yaml train.models)")
    parser.add_argument("--seed", type=int, default=None,
                        help="which run: models/<model>/seed-<seed> (default: the first of train.seeds)")
    parser.add_argument("--models-dir", type=Path, required=True, help="train stage outputs: <dir>/<model>/seed-<seed>")
    parser.add_argument("--test", type=Path, required=True, help="the official 10k test set (x, y)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")


def cli(args) -> None:
    from pipeline.params import EvaluateParams, load_params, section
    from pipeline.train import run_dir, seed_of

    raw = load_params(args.params)
    params = section(EvaluateParams, "evaluate", raw)
    seed = seed_of(raw, args.seed)
    x, y = load_test_set(args.test)
    metrics, probs = evaluate_model(
        args.model, run_dir(args.models_dir, args.model, seed), x, y, batch_size=params.batch_size,
        latency_calls=params.latency_calls, warmup_calls=params.warmup_calls)
    write_outputs(args.out, args.model, seed, metrics, y, probs)
    t, inf = metrics["test"], metrics["inference"]
    print(f"evaluate [{args.model}, seed {seed}]: test accuracy {t['accuracy']:.4f} "
          f"(95% CI {t['accuracy_ci95_low']:.4f}-{t['accuracy_ci95_high']:.4f}, n={t['n']}); "
          f"batch-1 latency {inf['latency_batch1_median_ms']:.2f} ms; "
          f"{inf['throughput_img_per_s']:.0f} img/s at batch {inf['throughput_batch_size']}", file=sys.stderr)
