"""The cnn-ours ablation (docs/results/cnn-ours-ablation): train one variant on data/split and report its
validation accuracy (single view, flip-averaged, flip + 1-pixel shifts) and its time per epoch.

    python -m benchmarks.cnn_ablation NAME '{"ls": 0.1}' [--n 9600] [--seed 42] [--out DIR]

The variant is the JSON object of overrides of cnn-ours as shipped (shipped_base below). Validation split only:
this never reads the test set, so it can be run as often as a design search needs. `--n` trains on the first N
training images (a timing screen: a few epochs on a slice say how fast an epoch is, not how accurate it gets).
Needs `dvc repro split` first. Not part of the tests: each full-data variant is a full training run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (the TensorFlow environment, before Keras is imported)
from pipeline import io
from pipeline.models.cnn import INPUT_SHAPE, Cutout
from pipeline.models.registry import preprocess
from pipeline.schema import IMAGE_SIDE, N_CLASSES
from pipeline.training.train import _datasets

REPO = Path(__file__).resolve().parents[1]


def shipped_base() -> dict:
    """cnn-ours as shipped (params.yaml models.cnn-ours, its one home), in this harness's terms: blocks are
    [filters of each conv, BatchNorm?, dropout after the block's max-pool]; the rest are the harness's extras,
    off (the shipped model has none of them)."""
    from pipeline.params import load_params

    hp = load_params(REPO / "params.yaml")["models"]["cnn-ours"]
    blocks = [[[f], bn, drop] for f, bn, drop in zip(hp["filters"], hp["batch_norm_conv"], hp["dropout_conv"],
                                                     strict=True)]
    return dict(blocks=blocks, dense=hp["dense_units"], dropout_dense=hp["dropout_dense"], epochs=hp["epochs"],
                batch=hp["batch_size"], lr=hp["learning_rate"], wd=hp["weight_decay"], shift=hp["shift"],
                interp="bilinear", ls=hp["label_smoothing"], ema=0.0, opt="adamw", sched="cosine", warmup=0.0,
                erase=0, jit=False, policy="", flip=hp["augment"], s2d=False)


def random_erase_layer(size: int):
    """Cutout: zero one random square of side 2*(size//2)+1 in half of the training images (inactive at
    inference): the pipeline's own layer, seeded as the ablation always was."""
    return Cutout(2 * (size // 2) + 1, seed=1)


def build(c: dict, steps_per_epoch: int):
    import keras
    from keras import layers

    def conv(filters: int, batch_norm: bool) -> list:
        if not batch_norm:
            return [layers.Conv2D(filters, 3, padding="same", activation="relu")]
        return [layers.Conv2D(filters, 3, padding="same", use_bias=False), layers.BatchNormalization(),
                layers.Activation("relu")]

    stack: list = [keras.Input(INPUT_SHAPE)]
    if c["flip"]:
        stack.append(layers.RandomFlip("horizontal"))
    if c["shift"] > 0:
        stack.append(layers.RandomTranslation(c["shift"], c["shift"], fill_mode="constant", fill_value=0.0,
                                              interpolation=c["interp"]))
    if c["erase"]:
        stack.append(random_erase_layer(int(c["erase"])))
    if c["s2d"]:   # space-to-depth stem: each 2x2 pixel patch becomes 4 channels at 14x14 (no 28x28 convolution)
        half = IMAGE_SIDE // 2
        stack += [layers.Reshape((half, 2, half, 2, 1)), layers.Permute((1, 3, 2, 4, 5)),
                  layers.Reshape((half, half, 4))]
    for filters, batch_norm, drop in c["blocks"]:
        for f in filters:
            stack += conv(f, batch_norm)
        stack += [layers.MaxPooling2D(2), layers.Dropout(drop)]
    stack += [layers.Flatten(), layers.Dense(c["dense"], use_bias=False), layers.BatchNormalization(),
              layers.Activation("relu"), layers.Dropout(c["dropout_dense"]),
              layers.Dense(N_CLASSES, activation="softmax", dtype="float32")]
    model = keras.Sequential(stack)
    total = steps_per_epoch * c["epochs"]
    warm = int(c["warmup"] * total)
    if c["sched"] == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(c["lr"], decay_steps=total, alpha=0.0)
    else:   # linear warm-up, then linear decay to 0
        class Linear(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                step = keras.ops.cast(step, "float32")
                up = step / max(warm, 1) if warm else 1.0
                return c["lr"] * keras.ops.maximum(0.0, keras.ops.minimum(up, (total - step) / max(total - warm, 1)))

            def get_config(self):
                return {}
        schedule = Linear()
    ema = {"use_ema": True, "ema_momentum": c["ema"]} if c["ema"] else {}
    if c["opt"] == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=c["wd"], **ema)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True,
                                         weight_decay=c["wd"], **ema)
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(label_smoothing=c["ls"]),
                  metrics=["accuracy"], jit_compile=c["jit"])
    return model


def views(x: np.ndarray) -> list[np.ndarray]:
    """Each image, its mirror, and both shifted by one pixel up/down/left/right (zero fill): 10 views."""
    out = [x, x[:, :, ::-1]]
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        s = np.roll(x, (dy, dx), axis=(1, 2))
        if dy:
            s[:, 0 if dy == 1 else -1] = 0
        if dx:
            s[:, :, 0 if dx == 1 else -1] = 0
        out += [s, s[:, :, ::-1]]
    return out


def main() -> None:
    import keras

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("overrides", nargs="?", default="{}", help="JSON object of overrides of the shipped design")
    ap.add_argument("--n", type=int, default=0, help="train on the first N images only (timing screen)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--split", type=Path, default=REPO / "data" / "split")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "cnn-ours-ablation")
    a = ap.parse_args()
    overrides, base = json.loads(a.overrides), shipped_base()
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise SystemExit(f"unknown override(s) {unknown}; valid: {sorted(base)}")
    c = {**base, **overrides}
    train, val = io.load_arrays(a.split / "train.npz"), io.load_arrays(a.split / "val.npz")
    x, y = (train["x"][:a.n], train["y"][:a.n]) if a.n else (train["x"], train["y"])
    keras.utils.set_random_seed(a.seed)
    if c["policy"]:
        keras.mixed_precision.set_global_policy(c["policy"])
    model = build(c, -(-len(x) // c["batch"]))
    fit_kw, _ = _datasets(x, y, val["x"], val["y"], c["batch"], a.seed, True)
    epoch_s: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            epoch_s.append(round(time.monotonic() - self.t0, 2))

    started = time.monotonic()
    history = model.fit(epochs=c["epochs"], callbacks=[EpochTimer()], verbose=2, **fit_kw)
    train_s = time.monotonic() - started
    xv, yv = preprocess("keras", val["x"]), val["y"].astype(int)
    probs = [np.asarray(model.predict(v, batch_size=1024, verbose=0)) for v in views(xv)]

    def acc(p: np.ndarray) -> float:
        return float((p.argmax(1) == yv).mean())

    result = dict(name=a.name, config=c, n=len(x), seed=a.seed, train_s=round(train_s, 1), epoch_s=epoch_s,
                  params=int(model.count_params()), val_single=acc(probs[0]), val_flip=acc(probs[0] + probs[1]),
                  val_tta10=acc(sum(probs)),
                  hist={k: [round(float(v), 4) for v in vs] for k, vs in history.history.items()})
    io.write_json(a.out / f"{a.name}.json", result)
    print(json.dumps({k: result[k] for k in ("name", "train_s", "val_single", "val_flip", "val_tta10")}))


if __name__ == "__main__":
    main()
