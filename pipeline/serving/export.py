"""export stage: a trained Keras model -> ONNX, which ONNX Runtime (C, C++, C#, Java, JS, Python, ...) loads.

    python -m pipeline export --model cnn-ours --seed 42 --models-dir models --test data/processed/test.npz \
        --out exports/cnn-ours/seed-42

Writes, as one atomic directory:
  model.onnx   input `image`: float32 (N, 28, 28, 1), pixel / 255, a light item on a black background (the
               Fashion-MNIST convention; pipeline.serving.imaging converts photos); output: (N, 10) class probabilities
               in label order. A model trained with `test_time_flip` is exported WITH its flip averaging, so the
               file predicts exactly what `load_predictor` (and the evaluate stage) measured.
  model.json   the input/output contract, class names, the source model's SHA-256, and the check below.

The check: the exported model must agree with the Keras model on the first `export.check_images` official test
images: identical argmax, probabilities within `export.max_abs_diff`. A disagreement fails the stage and
nothing is written. Export uses Keras' own `model.export(format="onnx")` (tf2onnx under the TensorFlow backend).
Only Keras models are exported: scikit-learn models stay skops files (`python -m pipeline predict` and
`serve` use them). Which models the DVC stage exports is params.yaml `export.models`.
"""

from __future__ import annotations

import contextlib
import io as _stdio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import io
from pipeline.data.convert import load_test_set
from pipeline.errors import PipelineError
from pipeline.models import registry
from pipeline.params import TrainParams, load_params, section
from pipeline.runs import model_dir_for, run_dir, seed_of
from pipeline.schema import CLASS_NAMES, IMAGE_SIDE

ONNX_FILE = "model.onnx"
META_FILE = "model.json"
INPUT_NAME = "image"


@dataclass(frozen=True)
class ExportParams:
    """params.yaml `export` (every key required: params.yaml is the one home of these values)."""
    models: list[str]       # Keras models in train.models to export (DVC matrix)
    check_images: int       # official test images the exported model is checked on
    max_abs_diff: float     # largest allowed |p_onnx - p_keras|

    def __post_init__(self):
        if self.check_images < 1 or not 0 < self.max_abs_diff < 1:
            raise PipelineError("params.yaml: export.check_images must be >= 1 and export.max_abs_diff in (0, 1), "
                                f"got {self.check_images} and {self.max_abs_diff}")


def check_export_models(models: Sequence[str], trained: Sequence[str]) -> None:
    """export.models: registered Keras models that train.models trains (else DVC has no model to export)."""

    for name in models:
        spec = registry.get(name)
        if spec.family != "keras":
            keras_names = [n for n in registry.names() if registry.get(n).family == "keras"]
            raise PipelineError(f"params.yaml: export.models lists `{name}`, a scikit-learn model; only Keras "
                                "models are exported to ONNX",
                                hint=f"remove it (predict and serve use its skops file); Keras models: "
                                     f"{', '.join(keras_names)}")
        if name not in trained:
            raise PipelineError(f"params.yaml: export.models lists `{name}`, which train.models does not train",
                                hint=f"add `{name}` to train.models, or remove it from export.models")


# ------------------------------------------------------------------------------ core
def inference_model(model, flip_average: bool):
    """A functional Keras model that predicts as load_predictor does: inference mode (no augmentation or
    dropout), and with test-time flip averaging when the run was validated that way."""
    import keras

    inp = keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1), name=INPUT_NAME)
    out = model(inp, training=False)
    if flip_average:
        out = (out + model(keras.ops.flip(inp, axis=2), training=False)) / 2.0
    return keras.Model(inp, out, name="fashion_mnist_classifier")


def onnx_probabilities(path: Path, xs: np.ndarray) -> np.ndarray:
    """Class probabilities from an ONNX file for preprocessed images (N,28,28,1) with ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: xs.astype(np.float32)})[0])


def compare(p_export: np.ndarray, p_keras: np.ndarray) -> dict[str, Any]:
    """Agreement of two probability arrays (pure)."""
    if p_export.shape != p_keras.shape:
        raise PipelineError(f"the exported model returned shape {p_export.shape}, Keras {p_keras.shape}")
    return {"images": int(len(p_keras)),
            "argmax_agreement": float(np.mean(p_export.argmax(1) == p_keras.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(p_export.astype(np.float64) - p_keras)))}


@contextlib.contextmanager
def _quiet():
    """tf2onnx prints its conversion log on stdout/stderr; keep it for an error message only."""
    buf = _stdio.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            yield buf
        except Exception as exc:
            raise PipelineError(f"ONNX conversion failed ({type(exc).__name__}: {exc})\n{buf.getvalue()[-2000:]}",
                                hint="check that onnx and tf2onnx are installed (pip install -e .)") from None


def export_model(name: str, model_dir: Path, out: Path, x_check: np.ndarray, *,
                 max_abs_diff: float) -> dict[str, Any]:
    """Export models/<name>/seed-<seed> to out/ (atomic), after checking it against Keras on x_check."""
    import keras

    model_dir = Path(model_dir)
    meta = registry.read_train_meta(model_dir)
    spec = registry.get(meta.get("model", name))
    if spec.family != "keras" or not (model_dir / registry.KERAS_FILE).exists():
        raise PipelineError(f"{model_dir}: `{name}` is a scikit-learn model; only Keras models are exported",
                            hint="use `python -m pipeline predict` or `serve`, which load its skops file")
    flip = registry.predicts_flip_averaged(model_dir)
    wrapped = inference_model(registry.load_keras(model_dir / registry.KERAS_FILE), flip)
    xs = registry.preprocess("keras", x_check)
    p_keras = registry.load_predictor(model_dir)(x_check)
    with io.atomic_dir(out) as tmp:
        signature = [keras.InputSpec(shape=(None, IMAGE_SIDE, IMAGE_SIDE, 1), dtype="float32", name=INPUT_NAME)]
        with _quiet():
            wrapped.export(str(tmp / ONNX_FILE), format="onnx", verbose=False, input_signature=signature)
        check = compare(onnx_probabilities(tmp / ONNX_FILE, xs), p_keras)
        if check["argmax_agreement"] < 1.0 or check["max_abs_diff"] > max_abs_diff:
            raise PipelineError(
                f"{name}: the ONNX export disagrees with the Keras model on {check['images']} test images "
                f"(argmax agreement {check['argmax_agreement']:.4f}, max |difference| {check['max_abs_diff']:.2e} "
                f"> {max_abs_diff:g})", hint="nothing was written; report the Keras/tf2onnx versions with this")
        info = {
            "model": name, "seed": meta.get("seed"), "format": "onnx",
            "source": str(model_dir / registry.KERAS_FILE),
            "source_sha256": io.sha256_file(model_dir / registry.KERAS_FILE),
            "input": {"name": INPUT_NAME, "shape": ["N", IMAGE_SIDE, IMAGE_SIDE, 1], "dtype": "float32",
                      "scaling": "pixel / 255 (0..1)",
                      "convention": "Fashion-MNIST: light item on a black background, centred, 28x28 grey"},
            "output": {"shape": ["N", len(CLASS_NAMES)], "meaning": "class probabilities in label order"},
            "class_names": list(CLASS_NAMES),
            "flip_averaged": flip,
            "check": {**check, "reference": "Keras model via pipeline.models.registry.load_predictor",
                      "max_abs_diff_allowed": max_abs_diff},
            "versions": _versions(),
        }
        io.write_json(tmp / META_FILE, info)
    return info


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("keras", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    parser.add_argument("--model", required=True, help="a Keras model (params.yaml export.models)")
    parser.add_argument("--seed", type=int, default=None, help="which run (default: the first of train.seeds)")
    # Path defaults kept on purpose: this command is run by hand (README), also where no dvc.yaml is; they are
    # the paths dvc.yaml gives the stages that write these inputs (tests/test_params.py keeps them equal).
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--test", type=Path, default=Path("data/processed/test.npz"),
                        help="official test set: the export is checked on its first export.check_images images")
    parser.add_argument("--out", type=Path, default=None, help="default: exports/<model>/seed-<seed>")


def cli(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raw = load_params(args.params)
    params = section(ExportParams, "export", raw)
    train = section(TrainParams, "train", raw)
    check_export_models(params.models, train.models)
    if registry.get(args.model).family != "keras":
        raise PipelineError(f"`{args.model}` is a scikit-learn model; only Keras models are exported to ONNX",
                            hint="`python -m pipeline predict` and `serve` use its skops file directly")
    seed = seed_of(raw, args.seed)
    directory = model_dir_for(args.models_dir, args.model, seed)
    x, _ = load_test_set(args.test)
    out = args.out or run_dir(Path("exports"), args.model, seed)
    info = export_model(args.model, directory, out, x[:params.check_images], max_abs_diff=params.max_abs_diff)
    c = info["check"]
    print(f"export [{args.model}, seed {seed}]: {out / ONNX_FILE}; agrees with Keras on {c['images']} test images "
          f"(argmax {c['argmax_agreement']:.0%}, max |difference| {c['max_abs_diff']:.1e})", file=sys.stderr)
