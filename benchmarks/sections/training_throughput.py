"""Section 3: training throughput (images/s) of one paper CNN, our tf.data input pipeline vs plain NumPy arrays
(the measuring itself is benchmarks/input_pipeline.py, which also runs on its own)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import input_pipeline as mod
from benchmarks.harness import Row, Section, log, median
from flows.dag import outs_dir


def run(workspace: Path, repeats: int, model: str = "paper-b-cnn", images: int = 12000,
             batch_size: int = 128) -> Section:
    s = Section("training", f"3. training throughput ({model})")
    import keras

    x, y = mod.load(workspace / outs_dir("split", workspace), images)
    results, raw = {}, {}
    variants = [("tf.data", True), ("numpy", False)]
    for label, use_tf in variants:
        if use_tf and keras.backend.backend() != "tensorflow":
            s.notes.append("tf.data variant skipped: Keras backend is not tensorflow")
            continue
        log(f"training: {model} {label}, 1 warm-up + {repeats} timed epochs of {len(x)} images")
        times = list(mod.epoch_times(model, x, y, batch_size, repeats, use_tf))
        raw[label] = times
        results[label] = mod.images_per_second(len(x), times)
    s.raw = {"model": model, "images_per_epoch": len(x), "batch_size": batch_size, "epoch_times_s": raw,
             "backend": keras.backend.backend()}
    if len(results) == 2:
        s.rows = [Row("training throughput", results["tf.data"], results["numpy"], "img/s", "higher",
                      "tf.data pipeline", "NumPy arrays")]
    else:
        s.skipped = "needs both the tf.data and the NumPy variant"
    s.notes.append(f"{model}, {len(x)} images per epoch, batch {batch_size}: images / total time of {repeats} timed "
                   "epochs after 1 warm-up epoch, each variant on fresh weights (benchmarks/input_pipeline.py).")
    if len(results) == 2:
        medians = {label: len(x) / median(times) for label, times in raw.items()}
        s.notes.append(f"By the median epoch instead: tf.data / NumPy = {medians['tf.data'] / medians['numpy']:.2f}x.")
    return s
