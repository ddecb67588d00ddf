"""Section 4: inference of the best trained CNN, the evaluate stage's predictor (registry.load_predictor) vs
calling the Keras model directly: batch-1 latency and large-batch throughput."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.data import test_arrays
from benchmarks.harness import Row, Section, log, median
from flows.dag import outs_dir


def best_keras_model(workspace: Path) -> tuple[str, Path, float] | None:
    best = None
    models, metrics_dir = workspace / outs_dir("train", workspace), workspace / outs_dir("evaluate", workspace)
    for meta_path in sorted(models.glob("*/seed-*/train.json")):
        d = meta_path.parent          # <models>/<name>/seed-<seed>
        if not (d / "model.keras").exists():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        acc = meta.get("val_accuracy")
        metrics = metrics_dir / d.parent.name / f"{d.name}.json"
        if metrics.exists():  # the official test accuracy, when evaluate has run
            try:
                acc = json.loads(metrics.read_text())["test"]["accuracy"]
            except (OSError, ValueError, KeyError):
                pass
        if acc is not None and (best is None or acc > best[2]):
            best = (d.parent.name, d, float(acc))
    return best


def run(workspace: Path, repeats: int, latency_calls: int = 50, batch_size: int = 1024) -> Section:
    s = Section("inference", "4. inference (best CNN)")
    found = best_keras_model(workspace)
    if found is None:
        models = outs_dir("train", workspace)
        s.skipped = f"no trained CNN in {workspace / models} ({models}/<name>/seed-<seed>/model.keras + train.json)"
        return s
    name, model_dir, acc = found
    from pipeline.metrics import batch1_latency, predict_in_batches, throughput
    from pipeline.models import registry

    x, _, source = test_arrays(workspace)
    ours = registry.load_predictor(model_dir, batch_size=batch_size)
    model = registry.load_keras(model_dir / registry.KERAS_FILE)

    # Like for like: a model trained with test_time_flip is predicted on each image and its mirror image
    # by load_predictor, so the direct alternative does the same two forward passes.
    flip_average = registry.predicts_flip_averaged(model_dir)

    def call(xs: np.ndarray) -> np.ndarray:
        return np.asarray(model(xs, training=False))

    def direct(batch: np.ndarray) -> np.ndarray:
        xs = registry.preprocess("keras", batch)
        return registry.mirror_averaged(call, xs) if flip_average else call(xs)

    lat: dict[str, list[float]] = {"ours": [], "direct": []}
    thr: dict[str, list[float]] = {"ours": [], "direct": []}
    for i in range(repeats):
        for label, fn in (("ours", ours), ("direct", direct)):
            log(f"inference: {name} {label} repeat {i + 1}/{repeats}")
            lat[label].append(batch1_latency(fn, x, latency_calls, 5)["median_ms"])
            _, timings = predict_in_batches(fn, x, batch_size)
            thr[label].append(throughput(timings, batch_size))
    s.rows = [
        Row("batch-1 latency (median)", median(lat["ours"]), median(lat["direct"]), "ms", "lower",
            "load_predictor", "model(x) direct call"),
        Row(f"batch-{batch_size} throughput", median(thr["ours"]), median(thr["direct"]), "img/s", "higher",
            "load_predictor", "model(x) direct call"),
    ]
    s.raw = {"model": name, "model_dir": str(model_dir), "accuracy_used_to_pick": acc, "test_data": source,
             "latency_ms": lat, "throughput_img_s": thr}
    s.notes.append(f"Best CNN by test (else validation) accuracy: {name} ({acc:.4f}). ours = the predictor the "
                   "evaluate stage times (registry.load_predictor: Keras safe_mode load; a direct inference call below "
                   "the batch size, model.predict at or above it); "
                   f"alternative = calling the same model directly"
                   f"{' (both average each image with its mirror image: test_time_flip)' if flip_average else ''}. "
                   f"{latency_calls} timed batch-1 calls after 5 "
                   f"warm-up calls; throughput over the 10k test set at batch {batch_size}, first batch excluded.")
    return s
