"""The ONE model registry: every trainable model, its source, its published numbers, its builder.

All numbers quoted from the papers live here (`ModelSpec.published`) and nowhere else; evaluate and
publish read them from here. Importing this module is cheap: Keras/scikit-learn are imported only
when a model is built or loaded.

    names()                 -> every registered name, in the canonical order
    get(name)               -> ModelSpec (PipelineError listing valid names on an unknown one)
    spec.hyperparams(hp)    -> params.yaml `models.<name>` checked against the keys the builder reads
    spec.build(hp, ...)     -> compiled Keras model, or unfitted sklearn Pipeline
    preprocess(family, x)   -> the input transform used in training AND prediction
    load_predictor(dir)     -> safe loader: uint8 (N,28,28) -> class probabilities (N,10)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from pipeline.errors import PipelineError
from pipeline.params import check_type
from pipeline.schema import CLASS_NAMES, IMAGE_SIDE, N_CLASSES, N_PIXELS

KERAS_FILE = "model.keras"
SKOPS_FILE = "model.skops"
# A model's GPU variant (params.yaml `models.<name>.gpu`): overrides of its own keys, used instead of them when
# it trains on a GPU (train.gpu_variant); null = none. Only models that list this key have one.
GPU_KEY = "gpu"

PAPER_A = "Paper A"
PAPER_B = "Paper B"
BENCHMARK = "Xiao et al. 2017 benchmark"
OURS = "ours"


# The type of every hyperparameter name any builder reads (one meaning per name across models). Checked when
# params.yaml is read, so a wrong value (a typo, or `dvc exp run -S models.x.epochs=ten`) is a params error
# naming the key, not a crash deep inside Keras or scikit-learn.
HYPERPARAMETER_TYPES: dict[str, Any] = {
    "epochs": int, "batch_size": int, "learning_rate": float, "rho": float, "weight_decay": float,
    "filters": list[int], "dense_units": int | list[int], "dropout": float, "dropout_conv": float | list[float],
    "dropout_dense": float, "padding": str, "batch_norm_conv": list[bool], "augment": bool, "shift": float,
    "label_smoothing": float, "test_time_flip": bool, "convs_per_block": list[int], "cutout": int,
    "gpu": dict[str, Any] | None,
    "C": float, "kernel": str, "cache_size": float, "train_eval_samples": int, "n_estimators": int,
    "max_depth": int | None, "criterion": str, "n_jobs": int | None, "activation": str,
    "hidden_layer_sizes": list[int], "max_iter": int, "n_neighbors": int, "p": float, "weights": str,
    "l1_ratio": float, "solver": str, "loss": str, "penalty": str | None, "priors": list[float] | None,
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str                         # "keras" | "sklearn"
    source: str                         # PAPER_A | PAPER_B | BENCHMARK | OURS
    description: str                    # structure only: hyperparameter VALUES live in params.yaml
    published: Mapping[str, Any]        # paper numbers, with what kind of number each is
    builder: Callable[..., Any] = field(repr=False)
    # The hyperparameter NAMES the builder reads. Their VALUES live only in params.yaml `models.<name>`
    # (one home per fact); a key missing there or not listed here is an error, never a silent default.
    hyperparameters: tuple[str, ...] = ()
    stand_in_for: str | None = None     # set when the default estimator replaces the published one

    def hyperparams(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """params.yaml `models.<name>` (None: absent), checked: exactly the keys this model's builder reads."""
        if values is None:
            raise PipelineError(f"params.yaml: no hyperparameters for model `{self.name}` (`models.{self.name}`)",
                                hint=f"add `models: {{{self.name}: ...}}` with: {', '.join(self.hyperparameters)}")
        if not isinstance(values, Mapping):
            raise PipelineError(f"params.yaml: `models.{self.name}` must be a mapping of hyperparameters, "
                                f"got {type(values).__name__}",
                                hint=f"model `{self.name}` needs: {', '.join(self.hyperparameters)}")
        values = dict(values)
        unknown = sorted(set(values) - set(self.hyperparameters))
        if unknown:
            raise PipelineError(
                f"params.yaml: unknown hyperparameter(s) for model `{self.name}`: {', '.join(unknown)}",
                hint=f"valid keys are: {', '.join(self.hyperparameters)}")
        missing = [k for k in self.hyperparameters if k not in values]
        if missing:
            raise PipelineError(
                f"params.yaml: `models.{self.name}` lacks hyperparameter(s): {', '.join(missing)}",
                hint=f"add {', '.join(f'`models.{self.name}.{k}`' for k in missing)} to params.yaml: model "
                     f"`{self.name}` needs all of {', '.join(self.hyperparameters)}, with no default anywhere "
                     "(see the shipped params.yaml for the published recipe's values)")
        for key in self.hyperparameters:
            check_type(values[key], HYPERPARAMETER_TYPES[key], f"models.{self.name}.{key}")
        if values.get(GPU_KEY) is not None:
            values[GPU_KEY] = self._gpu_overrides(values[GPU_KEY])
        return values

    def _gpu_overrides(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """`models.<name>.gpu`: a mapping of some of this model's own keys (not `gpu`), each of its type."""
        own = [k for k in self.hyperparameters if k != GPU_KEY]
        unknown = sorted(set(overrides) - set(own))
        if unknown:
            raise PipelineError(
                f"params.yaml: unknown hyperparameter(s) in `models.{self.name}.{GPU_KEY}`: {', '.join(unknown)}",
                hint=f"the GPU variant overrides some of the model's own keys: {', '.join(own)}")
        for key, value in overrides.items():
            check_type(value, HYPERPARAMETER_TYPES[key], f"models.{self.name}.{GPU_KEY}.{key}")
        return dict(overrides)

    def for_device(self, hp: Mapping[str, Any], use_gpu_variant: bool) -> tuple[dict[str, Any], bool]:
        """Checked hyperparameters -> (the values to train with, whether they are the GPU variant's): the base
        values with `gpu`'s overrides applied when `use_gpu_variant` and the model has a GPU variant."""
        base = {k: v for k, v in hp.items() if k != GPU_KEY}
        overrides = hp.get(GPU_KEY)
        if use_gpu_variant and overrides:
            return {**base, **overrides}, True
        return base, False

    def build(self, hp: Mapping[str, Any], *, seed: int, steps_per_epoch: int | None = None,
              exact_gradient_boosting: bool = False):
        if self.family == "keras":
            return self.builder(dict(hp), steps_per_epoch, name=self.name)
        if self.name == "gradient-boosting":
            return self.builder(dict(hp), seed, exact=exact_gradient_boosting)
        return self.builder(dict(hp), seed)

    def effective_stand_in_for(self, exact_gradient_boosting: bool = False) -> str | None:
        if self.name == "gradient-boosting" and exact_gradient_boosting:
            return None
        return self.stand_in_for


# ------------------------------------------------------------------------------------ builders
def _keras(fn_name: str) -> Callable[..., Any]:
    def build(hp, steps_per_epoch, *, name):
        from pipeline.models import cnn   # Keras loads lazily
        return getattr(cnn, fn_name)(hp, steps_per_epoch, name=name)
    return build


def _sk(fn_name: str) -> Callable[..., Any]:
    def build(hp, seed, **kw):
        from pipeline.models import baselines   # scikit-learn loads lazily
        return getattr(baselines, fn_name)(hp, seed, **kw)
    return build


# ------------------------------------------------------------------------------- published data
def _paper_a(val_acc: float, params: int, params_note: str, tf1: tuple, tf2: tuple) -> dict[str, Any]:
    return {
        "accuracy": val_acc,
        "accuracy_kind": "validation accuracy (paper A Table 1; = TF2 'test' column of Table 2)",
        "params": params,
        "params_note": params_note,
        "tf1_train_loss": tf1[0], "tf1_test_loss": tf1[1], "tf1_train_accuracy": tf1[2], "tf1_test_accuracy": tf1[3],
        "tf2_train_loss": tf2[0], "tf2_test_loss": tf2[1], "tf2_train_accuracy": tf2[2], "tf2_test_accuracy": tf2[3],
        "table2_note": "paper A Table 2 (TF1 = original work, TF2 = re-run); losses and accuracies (%)",
        "epochs": 12, "batch_size": 128, "optimizer": "Adadelta",
    }


_PAPER_B_CLASS_REPORT = {  # class -> (precision, recall, f1), paper B Table 3, model with dropout
    "T-shirt/top": (0.88, 0.87, 0.88), "Trouser": (0.99, 0.99, 0.99), "Pullover": (0.93, 0.83, 0.88),
    "Dress": (0.93, 0.95, 0.94), "Coat": (0.87, 0.91, 0.89), "Sandal": (0.99, 0.98, 0.99),
    "Shirt": (0.76, 0.80, 0.78), "Sneaker": (0.96, 0.96, 0.96), "Bag": (0.99, 0.99, 0.99),
    "Ankle boot": (0.96, 0.97, 0.97),
}
assert tuple(_PAPER_B_CLASS_REPORT) == CLASS_NAMES


def _benchmark(acc: float, config: str) -> dict[str, Any]:
    return {
        "accuracy": acc,
        "accuracy_kind": "test accuracy on the official 10k test set (Xiao et al. 2017 benchmark, best "
                         "configuration, trained on all 60k; as quoted in paper A Table 1)",
        "config": config,
    }


# Hyperparameter names per builder (values: params.yaml `models.<name>`).
_PAPER_A_DROPOUT_KEYS = ("epochs", "batch_size", "learning_rate", "rho", "filters", "dense_units", "dropout")
_PAPER_A_SIMPLE_KEYS = ("epochs", "batch_size", "learning_rate", "rho", "filters", "dense_units",
                        "dropout_conv", "dropout_dense")
_PAPER_B_KEYS = ("epochs", "batch_size", "learning_rate", "filters", "dense_units", "padding",
                 "dropout_conv", "dropout_dense")
_OURS_KEYS = ("epochs", "batch_size", "learning_rate", "weight_decay", "filters", "convs_per_block",
              "batch_norm_conv", "dropout_conv", "dense_units", "dropout_dense", "augment", "shift", "cutout",
              "label_smoothing", "test_time_flip", GPU_KEY)
# Every baseline also scores this many training rows for its train accuracy (all 48k would double SVC/KNN).
_SK = ("train_eval_samples",)

_SPECS: list[ModelSpec] = [
    # ---------------------------------------------------------------- paper A
    ModelSpec(
        "cnn-dropout-1", "keras", PAPER_A,
        "2 x (conv3x3 'same' -> maxpool2 -> dropout), dense, dense, softmax; Adadelta "
        "(widths are our conventional reconstruction: the paper's figure is not in the text)",
        _paper_a(98.69, 44426, "published trainable parameters (paper A section 5.1)",
                 (0.21, 0.26, 91.87, 90.35), (0.13, 0.04, 96.47, 98.69)),
        _keras("paper_a_dropout"), _PAPER_A_DROPOUT_KEYS,
    ),
    ModelSpec(
        "cnn-dropout-2", "keras", PAPER_A,
        "2 x (conv3x3 -> conv3x3 'same' -> maxpool2 -> dropout), dense, dense, softmax; Adadelta "
        "(conventional reconstruction)",
        _paper_a(99.08, 32340, "'about 32340' trainable parameters (paper A section 5.2)",
                 (0.19, 0.25, 92.59, 90.81), (0.08, 0.03, 97.51, 99.08)),
        _keras("paper_a_dropout_2"), _PAPER_A_DROPOUT_KEYS,
    ),
    ModelSpec(
        "cnn-dropout-3", "keras", PAPER_A,
        "as cnn-dropout-1 with considerably lower dropout; Adadelta (conventional reconstruction)",
        _paper_a(99.10, 44426, "published trainable parameters (paper A section 5.1)",
                 (0.14, 0.25, 94.53, 90.86), (0.06, 0.02, 98.06, 99.10)),
        _keras("paper_a_dropout"), _PAPER_A_DROPOUT_KEYS,
    ),
    ModelSpec(
        "cnn-simple", "keras", PAPER_A,
        "conv3x3 -> conv3x3 ('same') -> ONE maxpool2 (14x14 to the dense layer) -> dropout -> "
        "dense -> dropout -> softmax; Adadelta (Keras mnist_cnn lineage)",
        _paper_a(99.05, 110968, "published trainable parameters (paper A section 5.3)",
                 (0.04, 0.26, 98.91, 91.72), (0.03, 0.02, 98.95, 99.05)),
        _keras("paper_a_simple"), _PAPER_A_SIMPLE_KEYS,
    ),
    # ---------------------------------------------------------------- paper B
    ModelSpec(
        "paper-b-cnn", "keras", PAPER_B,
        "3 x (conv3x3 -> 2x2 maxpool), widening filters, flatten, dense, softmax; Adam, "
        "categorical cross-entropy on one-hot labels; no dropout (the overfitting model)",
        {"train_accuracy": 99.5, "accuracy": 91.5,
         "accuracy_kind": "validation accuracy, 'about' (paper B III.D; 48k/12k split; model without dropout)",
         "epochs": 50, "optimizer": "Adam"},
        _keras("paper_b"), _PAPER_B_KEYS,
    ),
    ModelSpec(
        "paper-b-cnn-dropout", "keras", PAPER_B,
        "paper-b-cnn with dropout after each conv block and after the dense layer",
        {"accuracy": 92.56, "accuracy_kind": "test accuracy on the official 10k test set (paper B Table 2)",
         "correct": 9256, "incorrect": 744, "train_accuracy": 92.0, "val_accuracy": 93.0,
         "train_val_note": "'about 92 and 93 percent' (paper B III.D)",
         "class_report": {c: {"precision": p, "recall": r, "f1": f}
                          for c, (p, r, f) in _PAPER_B_CLASS_REPORT.items()},
         "class_report_kind": "per-class precision/recall/F1 on the test set (paper B Table 3)",
         "epochs": 50, "optimizer": "Adam"},
        _keras("paper_b"), _PAPER_B_KEYS,
    ),
    # ---------------------------------------------------------------- ours
    ModelSpec(
        "cnn-ours", "keras", OURS,
        "3 x (conv3x3[-BN]-ReLU -> maxpool -> dropout), dense + BN + dropout, softmax; "
        "in-model horizontal flips (optional shifts); AdamW with cosine-decayed learning rate; "
        "optional flip-averaged prediction",
        {"target_accuracy": 93.5, "accuracy_kind": "our target test accuracy (not a published number)"},
        _keras("ours"), _OURS_KEYS,
    ),
    # ---------------------------------------------------------------- benchmark baselines
    ModelSpec("svc", "sklearn", BENCHMARK, "SVC, StandardScaler",
              _benchmark(89.7, "SVC(C=10, kernel='rbf')"), _sk("svc"),
              ("C", "kernel", "cache_size", *_SK)),
    ModelSpec("gradient-boosting", "sklearn", BENCHMARK,
              "HistGradientBoostingClassifier as a fast STAND-IN for GradientBoostingClassifier (~2-2.5 h; "
              "params.yaml train.exact_gradient_boosting: true uses the exact one)",
              _benchmark(88.0, "GradientBoostingClassifier(loss='deviance', n_estimators=100, max_depth=10)"),
              _sk("gradient_boosting"),
              ("n_estimators", "max_depth", *_SK),
              stand_in_for="GradientBoostingClassifier(loss='log_loss', n_estimators=100, max_depth=10)"),
    ModelSpec("random-forest", "sklearn", BENCHMARK,
              "RandomForestClassifier",
              _benchmark(87.3, "RandomForestClassifier(criterion='entropy', max_depth=100, n_estimators=100)"),
              _sk("random_forest"),
              ("criterion", "max_depth", "n_estimators", "n_jobs", *_SK)),
    ModelSpec("mlp", "sklearn", BENCHMARK, "MLPClassifier",
              _benchmark(87.0, "MLPClassifier(activation='relu', hidden_layer_sizes=(100,))"), _sk("mlp"),
              ("activation", "hidden_layer_sizes", "max_iter", *_SK)),
    ModelSpec("knn", "sklearn", BENCHMARK, "KNeighborsClassifier",
              _benchmark(85.4, "KNeighborsClassifier(n_neighbors=5, p=1, weights='distance')"), _sk("knn"),
              ("n_neighbors", "p", "weights", "n_jobs", *_SK)),
    ModelSpec("logistic-regression", "sklearn", BENCHMARK,
              "LogisticRegression(penalty='l1', multi_class='ovr') ported as "
              "OneVsRestClassifier(LogisticRegression(l1_ratio=1.0))",
              _benchmark(84.2, "LogisticRegression(C=1, penalty='l1', multi_class='ovr')"),
              _sk("logistic_regression"),
              ("C", "l1_ratio", "solver", "max_iter", "n_jobs", *_SK)),
    ModelSpec("linear-svc", "sklearn", BENCHMARK, "LinearSVC",
              _benchmark(83.6, "LinearSVC(C=1, loss='hinge', penalty='l2', multi_class='ovr')"), _sk("linear_svc"),
              ("C", "loss", "penalty", "max_iter", *_SK)),
    ModelSpec("sgd", "sklearn", BENCHMARK, "SGDClassifier",
              _benchmark(81.9, "SGDClassifier(loss='hinge', penalty='l2')"), _sk("sgd"),
              ("loss", "penalty", "max_iter", "n_jobs", *_SK)),
    ModelSpec("decision-tree", "sklearn", BENCHMARK, "DecisionTreeClassifier",
              _benchmark(79.8, "DecisionTreeClassifier(criterion='entropy', max_depth=10, splitter='best')"),
              _sk("decision_tree"), ("criterion", "max_depth", *_SK)),
    ModelSpec("perceptron", "sklearn", BENCHMARK, "Perceptron",
              _benchmark(78.2, "Perceptron(penalty='l1')"), _sk("perceptron"),
              ("penalty", "max_iter", "n_jobs", *_SK)),
    ModelSpec("passive-aggressive", "sklearn", BENCHMARK,
              "PassiveAggressiveClassifier via its documented scikit-learn 1.8+ equivalent "
              "SGDClassifier(loss='hinge', penalty=None, learning_rate='pa1', eta0=C)",
              _benchmark(77.6, "PassiveAggressiveClassifier(C=1)"), _sk("passive_aggressive"),
              ("C", "max_iter", "n_jobs", *_SK)),
    ModelSpec("extra-tree", "sklearn", BENCHMARK, "ExtraTreeClassifier (one tree)",
              _benchmark(77.5, "ExtraTreeClassifier(criterion='gini', max_depth=10, splitter='best')"),
              _sk("extra_tree"), ("criterion", "max_depth", *_SK)),
    ModelSpec("gaussian-nb", "sklearn", BENCHMARK, "GaussianNB (uniform priors, as in the benchmark grid)",
              _benchmark(51.1, "GaussianNB(priors=[0.1]*10)"), _sk("gaussian_nb"),
              ("priors", *_SK)),
]
_BY_NAME = {s.name: s for s in _SPECS}
assert all(k in HYPERPARAMETER_TYPES for s in _SPECS for k in s.hyperparameters), "a hyperparameter without a type"


def names() -> list[str]:
    return [s.name for s in _SPECS]


def get(name: str) -> ModelSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PipelineError(f"unknown model `{name}`", hint=f"valid model names are: {', '.join(names())}") from None


# ------------------------------------------------------------------------------- preprocessing
def preprocess(family: str, x: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> model input. Keras: float32 (N,28,28,1) in [0,1]; sklearn: (N,784) in [0,1]."""
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] == N_PIXELS:
        x = x.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise PipelineError(f"expected images of shape (N, 28, 28), got {x.shape}")
    x = x.astype(np.float32) / 255.0
    if family == "keras":
        return x[..., None]
    if family == "sklearn":
        return x.reshape(len(x), N_PIXELS)
    raise PipelineError(f"unknown model family `{family}`")


# ------------------------------------------------------------------------------- safe loading
# Types that skops does not trust by default but that our own baselines legitimately contain.
SKOPS_ALLOWED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.linear_model._sgd_fast.Hinge",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn.utils._bunch.Bunch",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "numpy.random._pickle.__randomstate_ctor",
    "collections.OrderedDict",
})


def load_skops(path: Path):
    """Load a skops file, refusing any type outside skops' defaults and our explicit allowlist."""
    import skops.io as sio
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a skops zip (e.g. a pickle), or corrupted
        raise PipelineError(f"{path}: not a valid skops file ({type(exc).__name__}: {exc})",
                            hint="retrain the model (python -m pipeline train); never load pickles") from None
    refused = sorted(set(untrusted) - SKOPS_ALLOWED_TYPES)
    if refused:
        raise PipelineError(f"{path}: refusing to load untrusted type(s): {', '.join(refused)}",
                            hint="this file was not written by `pipeline train`; retrain the model")
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise PipelineError(f"{path}: could not load ({type(exc).__name__}: {exc})") from None


def load_keras(path: Path, compile: bool = False):
    """Load a .keras file with safe_mode=True (no Lambda/arbitrary code deserialisation)."""
    import zipfile

    import keras

    from pipeline.models import cnn  # noqa: F401  (registers cnn-ours' Cutout layer for loading; Keras loads lazily)
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{path}: not a .keras archive", hint="retrain the model; never load pickles")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:
        raise PipelineError(f"{path}: refused or failed to load safely ({type(exc).__name__}: {exc})",
                            hint="retrain the model with `python -m pipeline train`") from None


def keras_probabilities(model, xs: np.ndarray, *, batch_size: int = 1024,
                        flip_average: bool = False) -> np.ndarray:
    """Class probabilities of a Keras model for preprocessed images (N,28,28,1), inference mode.

    flip_average: test-time augmentation: average the predictions for each image and its mirror
    image (left-right), the same symmetry the model was trained with. Costs a second forward pass.
    """
    import keras

    def once(batch: np.ndarray) -> np.ndarray:
        if len(batch) < batch_size:
            # One direct call: model.predict() builds a data pipeline per call (a fixed cost per call),
            # which would swamp a batch-1 latency measurement. Same weights, inference mode.
            return np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), dtype=np.float32)
        return np.asarray(model.predict(batch, batch_size=batch_size, verbose=0), dtype=np.float32)

    return mirror_averaged(once, xs) if flip_average else once(xs)


def mirror_averaged(predict: Callable[[np.ndarray], np.ndarray], xs: np.ndarray) -> np.ndarray:
    """Mean of predict(xs) and predict(xs mirrored left-right): test-time flip averaging (N,28,28,1)."""
    return (predict(xs) + predict(np.ascontiguousarray(xs[:, :, ::-1]))) / 2.0


def predicts_flip_averaged(model_dir: str | Path) -> bool:
    """Whether this trained model is predicted with flip averaging (`test_time_flip` in its train.json).

    train.json records what training used, so the artefact is predicted the way it was validated.
    """
    path = Path(model_dir) / "train.json"
    return path.exists() and bool(read_train_meta(model_dir).get("hyperparams", {}).get("test_time_flip", False))


def load_predictor(model_dir: str | Path, batch_size: int = 1024) -> Callable[[np.ndarray], np.ndarray]:
    """Return predict(x_uint8 (N,28,28)) -> float32 probabilities (N,10) for a trained model directory.

    Loads safely (Keras safe_mode; skops with a type allowlist; never pickle) and applies the same
    preprocessing as training. scikit-learn models without predict_proba (SVC without Platt
    scaling, LinearSVC, SGD/Perceptron/passive-aggressive with hinge loss) return the ONE-HOT
    encoding of their predicted class: accuracy and confusion matrices are exact, but such
    'probabilities' are not calibrated (log-loss / ROC from them are meaningless).
    """
    model_dir = Path(model_dir)
    keras_path, skops_path = model_dir / KERAS_FILE, model_dir / SKOPS_FILE
    if keras_path.exists() == skops_path.exists():
        raise PipelineError(f"{model_dir}: expected exactly one of {KERAS_FILE} / {SKOPS_FILE}",
                            hint="run `python -m pipeline train --model NAME` first")
    if keras_path.exists():
        model = load_keras(keras_path)
        flip_average = predicts_flip_averaged(model_dir)

        def predict_keras(x: np.ndarray) -> np.ndarray:
            return keras_probabilities(model, preprocess("keras", x), batch_size=batch_size,
                                       flip_average=flip_average)
        return predict_keras

    model = load_skops(skops_path)

    def predict_sklearn(x: np.ndarray) -> np.ndarray:
        xs = preprocess("sklearn", x)
        if hasattr(model, "predict_proba"):
            probs = np.zeros((len(xs), N_CLASSES), dtype=np.float32)
            probs[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(xs)
            return probs
        pred = np.asarray(model.predict(xs), dtype=int)
        return np.eye(N_CLASSES, dtype=np.float32)[pred]
    return predict_sklearn


def read_train_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "train.json"
    if not path.exists():
        raise PipelineError(f"{path}: file not found", hint="run `python -m pipeline train` first")
    return json.loads(path.read_text(encoding="utf-8"))
