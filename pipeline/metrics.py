"""The statistics every stage that scores models shares: accuracy, confusion, per-class report, log loss, the
Wilson interval, exact McNemar with Holm's adjustment, and batched, timed prediction.

Pure functions (arrays in, numbers out) over scikit-learn's and scipy's, with the label set and the conventions the
report states fixed here. scikit-learn and scipy are imported on first use, to keep light commands light.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from pipeline.errors import PipelineError
from pipeline.progress import BatchProgress
from pipeline.schema import CLASS_NAMES, N_CLASSES

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
