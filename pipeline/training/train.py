"""train stage: train ONE registered model on data/split and write models/<name>/seed-<seed>/ atomically.

    python -m pipeline train --model NAME --seed SEED --data data/split --out models/NAME/seed-SEED

Writes model.keras | model.skops, train.json and history.csv (the contract evaluate and publish read), resumes an
interrupted Keras training from .checkpoints/, and is deterministic per seed on one machine: docs/training.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pipeline import io
from pipeline.device import detect_device, keras_backend
from pipeline.io import HISTORY_COLUMNS
from pipeline.metrics import log_loss
from pipeline.models import registry
from pipeline.models.registry import ModelSpec, preprocess
from pipeline.params import TrainParams, build, load_params
from pipeline.progress import BatchProgress, heartbeat
from pipeline.runs import run_dir, seed_of
from pipeline.schema import N_CLASSES

SCORING_BATCH = 2000   # rows per predict call when scoring a scikit-learn model (progress granularity)
CKPT_MODEL = "model.keras"
CKPT_STATE = "state.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- environment
def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the first GPU the active Keras backend sees, or None (no GPU, or it cannot tell)."""
    backend = keras_backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
                return (int(cc[0]), int(cc[1])) if cc else None
        elif backend == "jax":
            import jax
            dev = jax.devices()[0]
            cc = getattr(dev, "compute_capability", None)   # e.g. "9.0" on CUDA devices
            if dev.platform == "gpu" and cc:
                major, minor = str(cc).split(".")[:2]
                return int(major), int(minor)
        elif backend == "torch":
            import torch
            if torch.cuda.is_available():
                return tuple(torch.cuda.get_device_capability(0))
    except Exception:  # probing must never break training
        pass
    return None


# Tensor Cores (fast float16 matrix math) arrived with compute capability 7.0 (Volta); on older GPUs
# mixed_float16 is no faster, or slower (TensorFlow's mixed-precision guide).
MIXED_PRECISION_MIN_CAPABILITY = (7, 0)


def resolve_mixed_precision(setting: bool | str, device: str,
                            capability: tuple[int, int] | None = None) -> tuple[bool, str]:
    """params.yaml `train.mixed_precision` (True | False | "auto") on `device` ('CPU' or the GPU's name, as
    detect_device says) -> (train in mixed_float16?, why). Never on CPU: float16 math is emulated there."""
    if setting is False:
        return False, "off (train.mixed_precision: false)"
    if device == "CPU":
        return False, ("off: no GPU visible" + (" (train.mixed_precision: true applies on a GPU only)"
                                                 if setting is True else ""))
    if setting is True:
        return True, f"on: {device} (train.mixed_precision: true)"
    if capability is not None and tuple(capability) < MIXED_PRECISION_MIN_CAPABILITY:
        return False, (f"off: {device} has compute capability {capability[0]}.{capability[1]}, below 7.0 (no "
                       "float16 Tensor Cores); set train.mixed_precision: true to force it")
    return True, f"on: {device} (train.mixed_precision: auto)"


def resolve_gpu_variant(setting: bool | str, device: str) -> tuple[bool, str]:
    """params.yaml `train.gpu_variant` (True | False | "auto") on `device` ('CPU' or the GPU's name) -> (train a
    model's GPU variant, `models.<name>.gpu`, where it has one?, why)."""
    if setting is False:
        return False, "off (train.gpu_variant: false)"
    if setting is True:
        return True, f"on{'' if device == 'CPU' else ': ' + device} (train.gpu_variant: true)"
    if device == "CPU":
        return False, "off: no GPU visible (train.gpu_variant: auto)"
    return True, f"on: {device} (train.gpu_variant: auto)"


def fingerprint(spec: ModelSpec, hp: dict, seed: int, x_train, y_train, x_val, y_val, extra: dict) -> str:
    digest = hashlib.sha256(json.dumps(
        {"model": spec.name, "hp": hp, "seed": seed, "extra": extra}, sort_keys=True, default=str).encode())
    for arr in (x_train, y_train, x_val, y_val):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------- keras pieces
def _history_callback(rows: list[dict], ckpt_dir: Path | None, state_extra: dict):
    """Records one history row per epoch (with wall time) and checkpoints after each epoch."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            rows.append({
                "epoch": epoch + 1,
                "loss": _f(logs.get("loss")), "accuracy": _f(logs.get("accuracy")),
                "val_loss": _f(logs.get("val_loss")), "val_accuracy": _f(logs.get("val_accuracy")),
                "epoch_time_s": round(time.monotonic() - self._t0, 3),
            })
            if ckpt_dir is not None:
                with io.atomic_dir(ckpt_dir) as tmp:
                    self.model.save(tmp / CKPT_MODEL)
                    (tmp / CKPT_STATE).write_text(json.dumps(
                        {"epoch": epoch + 1, "history": rows, **state_extra}, indent=1))

    return EpochLog()


def _f(v) -> float | None:
    return None if v is None else float(v)


def _datasets(x_train, y_train, x_val, y_val, batch_size: int, seed: int, use_tf_data: bool):
    """(train, val) as tf.data pipelines (TensorFlow backend) or as NumPy arrays (any backend: tf.data is
    TensorFlow's, and the JAX and PyTorch backends must run where TensorFlow is not installed)."""
    if use_tf_data and keras_backend() == "tensorflow":
        import tensorflow as tf

        def prep(x, y):
            x = tf.cast(x, tf.float32)[..., None] / 255.0
            return x, tf.one_hot(tf.cast(y, tf.int32), N_CLASSES)

        # One endless iterator for the whole fit (repeat + steps_per_epoch), reshuffled every pass. Keras
        # otherwise builds a new iterator every epoch, and on 2 CPU cores that stalled about every other
        # epoch before its first step (docs/results/HISTORY.md, "CPU speed").
        train = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).cache()
                 .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
                 .batch(batch_size).map(prep, num_parallel_calls=tf.data.AUTOTUNE)
                 .repeat().prefetch(tf.data.AUTOTUNE))
        val = (tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(max(batch_size, 512))
               .map(prep, num_parallel_calls=tf.data.AUTOTUNE).cache().prefetch(tf.data.AUTOTUNE))
        steps = -(-len(x_train) // batch_size)  # one pass over the training set, last batch partial
        return ({"x": train, "steps_per_epoch": steps, "validation_data": val, "shuffle": False},  # shuffled above
                "tf.data")
    eye = np.eye(N_CLASSES, dtype=np.float32)
    return {"x": preprocess("keras", x_train), "y": eye[np.asarray(y_train, dtype=int)],
            "validation_data": (preprocess("keras", x_val), eye[np.asarray(y_val, dtype=int)]),
            "batch_size": batch_size, "shuffle": True}, "numpy"


def _train_keras(spec, hp, x_train, y_train, x_val, y_val, *, seed, checkpoint_dir, callbacks,
                 mixed_precision, gpu_variant, use_tf_data, verbose):
    import keras

    device = detect_device()
    if hp.get(registry.GPU_KEY):
        use_variant, why = resolve_gpu_variant(gpu_variant, device)
        log(f"train [{spec.name}]: GPU variant (models.{spec.name}.{registry.GPU_KEY}) {why}")
    else:
        use_variant = False
    hp, use_variant = spec.for_device(hp, use_variant)
    if use_tf_data and keras_backend() != "tensorflow":
        log(f"train [{spec.name}]: train.tf_data is for the TensorFlow backend; keras/{keras_backend()} reads "
            "NumPy arrays")
    use_mp, why = resolve_mixed_precision(mixed_precision, device,
                                          gpu_compute_capability() if device != "CPU" else None)
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    log(f"train [{spec.name}]: mixed precision {why}")
    keras.utils.set_random_seed(seed)
    epochs, batch_size = int(hp["epochs"]), int(hp["batch_size"])
    steps = int(np.ceil(len(x_train) / batch_size))
    fp = fingerprint(spec, hp, seed, x_train, y_train, x_val, y_val,
                     {"mixed_precision": use_mp, "backend": keras_backend()})

    rows: list[dict] = []
    initial_epoch = 0
    model = None
    state_path = checkpoint_dir / CKPT_STATE if checkpoint_dir else None
    if state_path is not None and state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("fingerprint") == fp:
            model = registry.load_keras(checkpoint_dir / CKPT_MODEL, compile=True)  # with optimizer state
            rows = list(state["history"])
            initial_epoch = int(state["epoch"])
            log(f"train [{spec.name}]: resuming from checkpoint after epoch {initial_epoch}/{epochs}")
        else:
            log(f"train [{spec.name}]: ignoring stale checkpoint in {checkpoint_dir} (different settings/data)")
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if model is None:
        model = spec.build(hp, seed=seed, steps_per_epoch=steps)

    fit_kw, pipeline_kind = _datasets(x_train, y_train, x_val, y_val, batch_size, seed, use_tf_data)
    log(f"train [{spec.name}]: keras/{keras_backend()} on {device}, {len(x_train)} train / {len(x_val)} val, "
        f"{epochs} epochs x {steps} steps, batch {batch_size}, input {pipeline_kind}, "
        f"{_trainable(model):,} trainable params")
    cbs = [_history_callback(rows, checkpoint_dir, {"fingerprint": fp})] + list(callbacks)
    started = time.monotonic()
    if initial_epoch < epochs:
        model.fit(epochs=epochs, initial_epoch=initial_epoch, callbacks=cbs, verbose=verbose, **fit_kw)
    train_time = time.monotonic() - started + sum(r["epoch_time_s"] for r in rows[:initial_epoch])
    last = rows[-1] if rows else {}
    meta = {
        "epochs": len(rows), "device": device, "backend": keras_backend(),
        "params_count": _trainable(model), "train_time_s": round(train_time, 3),
        "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
        "train_accuracy": last.get("accuracy"), "train_loss": last.get("loss"),
        "resumed_from_epoch": initial_epoch or None, "hyperparams": hp, "gpu_variant": use_variant,
    }
    if hp.get("test_time_flip"):
        # Evaluation predicts with flip averaging (registry.load_predictor), so the validation figure
        # reported beside the test figure must be measured the same way; the per-epoch history stays
        # single-view (what Keras measured during fit) and is kept in train.json too.
        probs = registry.keras_probabilities(model, preprocess("keras", x_val), flip_average=True)
        y_val = np.asarray(y_val, dtype=int)
        meta.update({
            "val_accuracy": float((probs.argmax(axis=1) == y_val).mean()),
            "val_loss": log_loss(y_val, probs),
            "val_accuracy_single_view": last.get("val_accuracy"), "val_loss_single_view": last.get("val_loss"),
        })
        log(f"train [{spec.name}]: validation accuracy {meta['val_accuracy']:.4f} with test-time flip "
            f"averaging ({last.get('val_accuracy') or float('nan'):.4f} single view)")
    return model, rows, meta


def _trainable(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


# ------------------------------------------------------------------------------- sklearn pieces
def _train_sklearn(spec, hp, x_train, y_train, x_val, y_val, *, seed, exact_gradient_boosting):
    from sklearn.metrics import accuracy_score, log_loss

    from pipeline.models.baselines import param_count   # scikit-learn loads lazily

    model = spec.build(hp, seed=seed, exact_gradient_boosting=exact_gradient_boosting)
    xt, xv = preprocess("sklearn", x_train), preprocess("sklearn", x_val)
    log(f"train [{spec.name}]: {model[-1]!r} on {len(xt)} x {xt.shape[1]} ...")
    t0 = time.monotonic()
    with heartbeat(f"train [{spec.name}]: fitting"):   # a fit reports nothing itself; SVC's takes minutes
        model.fit(xt, y_train)
    fit_time = time.monotonic() - t0
    log(f"train [{spec.name}]: fitted in {fit_time:.1f} s; scoring ...")

    n_eval = min(int(hp.get("train_eval_samples") or len(xt)), len(xt))
    sub = np.sort(np.random.default_rng(seed).choice(len(xt), n_eval, replace=False))

    def scores(x, y, what):
        # In batches, so that slow predictors (SVC, KNN: minutes for 12k images) show progress and an estimate.
        progress = BatchProgress(f"train [{spec.name}]: scoring the {what}", len(x))
        proba = hasattr(model, "predict_proba")
        parts = []
        for start in range(0, len(x), SCORING_BATCH):
            batch = x[start:start + SCORING_BATCH]
            parts.append(model.predict_proba(batch) if proba else model.predict(batch))
            progress.update(len(batch))
        out = np.concatenate(parts)
        if proba:
            pred = np.asarray(model.classes_)[out.argmax(1)]
            return float(accuracy_score(y, pred)), float(log_loss(y, out, labels=np.asarray(model.classes_)))
        return float(accuracy_score(y, out)), None

    train_acc, train_loss = scores(xt[sub], np.asarray(y_train)[sub], "training subsample")
    val_acc, val_loss = scores(xv, y_val, "validation split")
    total = time.monotonic() - t0
    log(f"train [{spec.name}]: done: val accuracy {val_acc:.4f} (fit {fit_time:.1f} s, total {total:.1f} s)")
    rows = [{"epoch": 1, "loss": train_loss, "accuracy": train_acc, "val_loss": val_loss,
             "val_accuracy": val_acc, "epoch_time_s": round(fit_time, 3)}]
    meta = {
        "epochs": 1, "device": "CPU", "backend": "sklearn", "params_count": param_count(model),
        "train_time_s": round(fit_time, 3), "val_accuracy": val_acc, "val_loss": val_loss,
        "train_accuracy": train_acc, "train_loss": train_loss, "resumed_from_epoch": None,
    }
    return model, rows, meta


# ------------------------------------------------------------------------------------ pure core
def train_model(spec: ModelSpec, hyperparams: dict[str, Any], x_train: np.ndarray, y_train: np.ndarray,
                x_val: np.ndarray, y_val: np.ndarray, *, seed: int = 42, checkpoint_dir: Path | None = None,
                callbacks: Iterable = (), mixed_precision: bool | str = False, exact_gradient_boosting: bool = False,
                gpu_variant: bool | str = False, use_tf_data: bool = True, verbose: int = 2):
    """Train `spec` on uint8 images (N,28,28) + int labels. Returns (model, history rows, train.json dict).

    Writes nothing except the Keras epoch checkpoint in `checkpoint_dir` (if given).
    """
    hp = spec.hyperparams(hyperparams)
    if spec.family == "keras":
        model, rows, meta = _train_keras(spec, hp, x_train, y_train, x_val, y_val, seed=seed,
                                         checkpoint_dir=checkpoint_dir, callbacks=callbacks,
                                         mixed_precision=mixed_precision, gpu_variant=gpu_variant,
                                         use_tf_data=use_tf_data, verbose=verbose)
    else:
        model, rows, meta = _train_sklearn(spec, hp, x_train, y_train, x_val, y_val, seed=seed,
                                           exact_gradient_boosting=exact_gradient_boosting)
    meta = {
        "model": spec.name, "family": spec.family, "source": spec.source,
        "train_time_s": meta["train_time_s"], "epochs": meta["epochs"], "device": meta["device"],
        "backend": meta["backend"], "seed": seed, "params_count": meta["params_count"],
        "val_accuracy": meta["val_accuracy"], "val_loss": meta["val_loss"],
        **{k: meta[k] for k in ("val_accuracy_single_view", "val_loss_single_view") if k in meta},
        "train_accuracy": meta["train_accuracy"], "train_loss": meta["train_loss"],
        # the values trained with: a Keras model's GPU variant applied where it was used
        "hyperparams": meta.get("hyperparams", hp),
        "stand_in_for": spec.effective_stand_in_for(exact_gradient_boosting),
        "resumed_from_epoch": meta["resumed_from_epoch"],
        **({"gpu_variant": meta["gpu_variant"]} if hp.get(registry.GPU_KEY) else {}),
    }
    return model, rows, meta


# ------------------------------------------------------------------------------------ I/O shell
def write_history(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})


def save_artifacts(out: Path, model, family: str, rows: list[dict], meta: dict) -> None:
    """Write the model directory atomically: nothing appears at `out` unless all files are complete."""
    with io.atomic_dir(out) as tmp:
        if family == "keras":
            model.save(tmp / registry.KERAS_FILE)
        else:
            import skops.io as sio
            sio.dump(model, tmp / registry.SKOPS_FILE)
        write_history(tmp / "history.csv", rows)
        (tmp / "train.json").write_text(json.dumps(meta, indent=2, default=io._json_default) + "\n")


CHECKPOINT_ROOT = Path(".checkpoints")


def run(name: str, data: Path, out: Path, params: dict[str, Any], *, seed: int | None = None,
        checkpoint_root: Path | None = None, callbacks: Iterable = (), verbose: int = 2) -> dict:
    """Load the split, train, write `out` atomically, drop the checkpoint. Returns train.json.

    seed: None = the first of params.yaml `train.seeds` (the DVC stages always pass one explicitly).
    checkpoint_root: None = CHECKPOINT_ROOT (relative to the working directory, the repository root).
    """

    spec = registry.get(name)
    tp = build(TrainParams, params.get("train", {}), "train")
    seed = seed_of(params, seed)
    hyperparams = (params.get("models") or {}).get(name)  # checked (absent, missing/unknown keys) by the spec
    train, val = io.load_arrays(data / "train.npz"), io.load_arrays(data / "val.npz")
    ckpt = run_dir(checkpoint_root or CHECKPOINT_ROOT, name, seed) if spec.family == "keras" else None
    model, rows, meta = train_model(
        spec, hyperparams, train["x"], train["y"], val["x"], val["y"], seed=seed, checkpoint_dir=ckpt,
        callbacks=callbacks, mixed_precision=tp.mixed_precision, gpu_variant=tp.gpu_variant,
        exact_gradient_boosting=tp.exact_gradient_boosting, use_tf_data=tp.tf_data, verbose=verbose)
    save_artifacts(out, model, spec.family, rows, meta)
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)
        for empty in (ckpt.parent, ckpt.parent.parent):   # .checkpoints/<name>/, then .checkpoints/
            try:
                empty.rmdir()
            except OSError:
                break
    log(f"train [{name}]: wrote {out} (val accuracy {meta['val_accuracy']:.4f}, {meta['train_time_s']:.1f} s)")
    return meta


def add_cli(parser) -> None:
    parser.add_argument("--model", required=True, help="registered model name (see pipeline.models.names())")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed of this run (default: the first of params.yaml train.seeds)")
    parser.add_argument("--data", type=Path, required=True, help="directory with the split stage's {train,val}.npz")
    parser.add_argument("--out", type=Path, default=None, help="default: models/<model>/seed-<seed>")
    parser.add_argument("--plot", type=Path, default=None,
                        help="also write the per-epoch history here (a DVC plot file outside the model dir)")


def cli(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = load_params(args.params)
    seed = seed_of(params, args.seed)
    out = args.out or run_dir(Path("models"), args.model, seed)
    run(args.model, args.data, out, params, seed=seed)
    if args.plot is not None:
        # DVC forbids a plot inside another output, so the curve DVC plots is a copy beside models/.
        io.write_bytes(args.plot, (out / "history.csv").read_bytes())
