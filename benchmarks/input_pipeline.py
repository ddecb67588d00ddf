"""Images/s of our training input pipeline (tf.data: cache -> shuffle -> batch -> scale/one-hot ->
repeat -> prefetch, as in pipeline/training/train.py) vs plain model.fit on pre-scaled NumPy arrays, for one
paper CNN, side by side in one run.

    python benchmarks/input_pipeline.py [--model paper-b-cnn] [--n 12000] [--repeats 3] [--data DIR]

Each variant trains 1 warm-up epoch (graph tracing, cache fill) plus --repeats timed epochs on the
same fresh model weights; throughput is images / total time of the timed epochs (the median epoch is
printed too). Uses the real split if --data has train.npz, else the official IDX files. On a shared
machine, compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load(data: Path, n: int):
    from pipeline import io
    if (data / "train.npz").exists():
        arrays = io.load_arrays(data / "train.npz")
        x, y = arrays["x"], arrays["y"]
    else:
        from pipeline.data.fetch import load_idx_dir
        x, y = load_idx_dir(Path(os.environ.get("FMNIST_IDX_DIR", "/usr/share/datasets/fashion-mnist")))["train"]
    return x[:n], y[:n]


def epoch_times(name: str, x, y, batch_size: int, repeats: int, use_tf_data: bool, seed: int = 0) -> list[float]:
    import keras

    from pipeline.training import train
    from pipeline.models import registry

    spec = registry.get(name)
    from pipeline.params import load_params
    shipped = (load_params(REPO / "params.yaml").get("models") or {}).get(name)
    hp = spec.hyperparams({**(shipped or {}), "batch_size": batch_size, "epochs": repeats + 1})
    keras.utils.set_random_seed(seed)
    model = spec.build(hp, seed=seed, steps_per_epoch=-(-len(x) // batch_size))
    fit_kw, kind = train._datasets(x, y, x[:batch_size], y[:batch_size], batch_size, seed, use_tf_data)
    fit_kw.pop("validation_data")
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(epochs=repeats + 1, callbacks=[Timer()], verbose=0, **fit_kw)
    print(f"  {kind:8s} epoch times (s): {' '.join(f'{t:.2f}' for t in times)} (first = warm-up)", flush=True)
    return times[1:]


def images_per_second(n_images: int, epoch_times_s: list[float]) -> float:
    """Training throughput over all timed epochs, not the median epoch: Keras stalls before some epochs
    (a new input iterator per epoch on the NumPy path), a systematic cost that a median would hide."""
    return n_images * len(epoch_times_s) / sum(epoch_times_s)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="paper-b-cnn")
    parser.add_argument("--n", type=int, default=12000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    from flows.dag import outs_dir

    split = outs_dir("split")   # the split stage's output directory, as dvc.yaml names it
    parser.add_argument("--data", type=Path, default=split, help=f"directory with train.npz (default {split})")
    args = parser.parse_args(argv)

    import keras
    x, y = load(args.data, args.n)
    print(f"{args.model}: {len(x)} images, batch {args.batch_size}, backend {keras.backend.backend()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for label, use_tf in (("tf.data", True), ("numpy", False)):
        if use_tf and keras.backend.backend() != "tensorflow":
            print("  tf.data: skipped (backend is not tensorflow; train.py falls back to NumPy)")
            continue
        times = epoch_times(args.model, x, y, args.batch_size, args.repeats, use_tf)
        results[label] = images_per_second(len(x), times)
        print(f"  {label:8s} {results[label]:,.0f} images/s over {len(times)} epochs "
              f"(median epoch {statistics.median(times):.2f} s)", flush=True)
    if len(results) == 2:
        print(f"ratio tf.data / numpy: {results['tf.data'] / results['numpy']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
