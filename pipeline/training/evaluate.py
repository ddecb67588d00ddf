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
Not about: training (pipeline.training.train) or comparing models (pipeline.publish).
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
from pipeline.data.convert import load_test_set
from pipeline.device import describe_device
from pipeline.errors import PipelineError
from pipeline.metrics import (Predictor, batch1_latency, is_one_hot, log_loss, macro_average, per_class_report,
                              predict_in_batches, throughput, wilson_interval)
from pipeline.models import registry
from pipeline.params import EvaluateParams, load_params, section
from pipeline.runs import output_paths, run_dir, seed_of
from pipeline.schema import CLASS_NAMES


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


def write_outputs(out_dir: Path, name: str, seed: int, metrics: dict[str, Any], y_true: np.ndarray,
                  probs: np.ndarray) -> None:
    """Predictions and confusion first, the metrics JSON last: a complete JSON implies complete siblings."""
    paths = output_paths(Path(out_dir), name, seed)
    y_pred = probs.argmax(axis=1).astype(np.uint8)
    io.save_arrays(paths["predictions"], y_true=np.asarray(y_true, dtype=np.uint8), y_pred=y_pred,
                   probs=np.asarray(probs, dtype=np.float32))
    io.write_text(paths["confusion"], confusion_csv(y_true, y_pred))
    io.write_json(paths["metrics"], metrics)


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    parser.add_argument("--model", required=True, help="registered model name (see params.yaml train.models)")
    parser.add_argument("--seed", type=int, default=None,
                        help="which run: models/<model>/seed-<seed> (default: the first of train.seeds)")
    parser.add_argument("--models-dir", type=Path, required=True, help="train stage outputs: <dir>/<model>/seed-<seed>")
    parser.add_argument("--test", type=Path, required=True, help="the official 10k test set (x, y)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")


def cli(args) -> None:
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
