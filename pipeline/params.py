"""params.yaml -> typed, validated settings: one dataclass per stage section.

Each stage reads only its own section. Unknown or missing keys and values of the wrong type are errors that
name the key, so a typo in params.yaml (or in a `dvc exp run -S key=value` override, which DVC writes into
params.yaml before the stage runs) fails loudly instead of silently using a default or crashing later.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from pipeline.errors import PipelineError

DEFAULT_PARAMS = Path("params.yaml")
T = TypeVar("T")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: params file not found", hint="run from the repository root, or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping of sections at the top level")
    return data


def build(cls: type[T], raw: Any, where: str) -> T:
    """Construct dataclass `cls` from mapping `raw`, rejecting unknown and missing keys.

    Every field is required: params.yaml is the one home of every setting, so a key deleted from it is an
    error naming the key, never a value silently taken from somewhere else.
    """
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: `{where}` must be a mapping, got {type(raw).__name__}",
                            hint=f"write `{where}:` as a mapping of keys (see the shipped params.yaml)")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise PipelineError(
            f"params.yaml: unknown key(s) in `{where}`: {', '.join(unknown)}",
            hint=f"valid keys are: {', '.join(sorted(names))}",
        )
    missing = [name for name in names if name not in raw]
    if missing:
        keys = ", ".join(f"`{where}.{name}`" for name in missing)
        raise PipelineError(f"params.yaml: missing key(s) in `{where}`: {', '.join(missing)}",
                            hint=f"add {keys} to params.yaml (every setting lives there; see the shipped "
                                 "params.yaml for its value and meaning)")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        check_type(value, hints[key], f"{where}.{key}")
    return cls(**raw)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        names = [{True: "true", False: "false", None: "null"}.get(a, str(a)) if not isinstance(a, str) else a
                 for a in args]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    if origin is list:
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:   # exact type too: YAML's true must not match 1, nor 1 match true
        return any(type(value) is type(a) and value == a for a in args)
    if origin is list:
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_matches(k, args[0]) and _matches(v, args[1])
                                                            for k, v in value.items()))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML writes 1.0 as a float but 1 as an int: both are numbers
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return isinstance(value, hint)


def check_type(value: Any, hint: Any, key: str) -> None:
    """Raise the params error for `key` when `value` does not have type `hint` (a dataclass annotation)."""
    if not _matches(value, hint):
        raise PipelineError(f"params.yaml: `{key}` must be {_type_name(hint)}, got {value!r} "
                            f"({type(value).__name__})",
                            hint="fix the value in params.yaml (or in the `dvc exp run -S` override)")


def section(cls: type[T], name: str, params: dict[str, Any] | None = None, path: str | Path = DEFAULT_PARAMS) -> T:
    params = load_params(path) if params is None else params
    if name not in params:
        raise PipelineError(f"params.yaml: section `{name}` is missing",
                            hint=f"add the `{name}:` section to params.yaml (see the shipped params.yaml)")
    return build(cls, params[name], name)


# One dataclass per params.yaml section. No field has a default: the values live in params.yaml only, and
# `build` rejects a missing key, so a value here could never be used anyway and would only drift from the file.

@dataclass(frozen=True)
class FetchParams:
    # A directory holding the official IDX files (.gz or not) or Kaggle CSVs, or an http(s) URL of a mirror.
    source: str
    # Keep only the first N rows of each split (null = all): quick trials and tests; the validate stage's
    # expected row counts must agree.
    max_rows: int | None
    timeout_s: float


@dataclass(frozen=True)
class ValidateParams:
    expected_rows: dict[str, int]
    # Each class's share of a split must lie within 1/10 +- this tolerance (absolute share).
    class_share_tolerance: float
    # How many offending rows/columns a failure message lists.
    max_examples: int
    # Content checks (pipeline.data.content). Each `max_share` is the largest share of a split's rows allowed;
    # `on_exceed` is "fail" (the gate rejects the data, exit 3) or "warn" (reported; the data pass).
    duplicates: dict[str, Any]
    test_in_train: dict[str, Any]
    near_duplicates: dict[str, Any]
    degenerate_images: dict[str, Any]
    drift: dict[str, Any]


@dataclass(frozen=True)
class ConvertParams:
    # Also write the PNG tree data/images/<split>/<class>/<index>.png (paper A's layout).
    images: bool
    image_workers: int  # 0 = one per CPU core


@dataclass(frozen=True)
class SplitParams:
    train_size: int
    val_size: int
    seed: int


@dataclass(frozen=True)
class TrainParams:
    # Models the DVC `train` stage trains (matrix); names from pipeline.models.names().
    models: list[str]
    # Every model is trained (and evaluated) once per seed: DVC's matrix expands train@<model>-<seed>.
    seeds: list[int]
    # true: the exact GradientBoostingClassifier (hours on a small CPU) instead of the
    # HistGradientBoostingClassifier stand-in.
    exact_gradient_boosting: bool
    # Keras mixed_float16 training: "auto" = on when the backend sees a GPU with float16 Tensor Cores (compute
    # capability 7.0+, or unknown); true = on whenever a GPU is visible; false = off. Never on CPU
    # (pipeline.training.train.resolve_mixed_precision).
    mixed_precision: Literal[True, False, "auto"]
    # TensorFlow backend: feed Keras from a tf.data pipeline (cache/shuffle/prefetch); else NumPy arrays.
    tf_data: bool
    # A model's GPU variant (`models.<name>.gpu`, overrides of its own keys): "auto" = used when the Keras backend
    # trains on a GPU; true = always (e.g. to try it on the CPU); false = never
    # (pipeline.training.train.resolve_gpu_variant).
    gpu_variant: Literal[True, False, "auto"]

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise PipelineError(f"params.yaml: train.seeds must be a non-empty list of distinct integers >= 0, "
                                f"got {self.seeds}")
        if len(set(self.models)) != len(self.models):
            raise PipelineError(f"params.yaml: train.models lists a model twice: {self.models}")


@dataclass(frozen=True)
class EvaluateParams:
    # Images per call when predicting the test set; throughput is measured at this batch size.
    batch_size: int
    # Timed single-image predictions (median reported) and untimed warm-up calls before them.
    latency_calls: int
    warmup_calls: int

    def __post_init__(self):
        for key in ("batch_size", "latency_calls"):
            if getattr(self, key) < 1:
                raise PipelineError(f"params.yaml: evaluate.{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup_calls < 0:
            raise PipelineError(f"params.yaml: evaluate.warmup_calls must be >= 0, got {self.warmup_calls}")


@dataclass(frozen=True)
class PublishParams:
    # McNemar tests between every pair of the `mcnemar_top` most accurate models.
    mcnemar_top: int
    # Significance level, applied to Holm-adjusted p-values (family-wise over all pairs tested).
    alpha: float
    # Test images shown in each of the correct / misclassified grids for the best model.
    sample_images: int
    # Figure resolution (PNG).
    dpi: int

    def __post_init__(self):
        if self.mcnemar_top < 2:
            raise PipelineError(f"params.yaml: publish.mcnemar_top must be >= 2, got {self.mcnemar_top}")
        if not 0 < self.alpha < 1:
            raise PipelineError(f"params.yaml: publish.alpha must lie in (0, 1), got {self.alpha}")
        if self.sample_images < 1 or self.dpi < 30:
            raise PipelineError("params.yaml: publish.sample_images must be >= 1 and publish.dpi >= 30")


@dataclass(frozen=True)
class OrchestrationParams:
    # Seconds a stage may run under `python -m flows run` before it is stopped: `default`, or per stage family
    # (the name before '@': `train` covers every train@<model>-<seed>). `dvc repro` does not read this section.
    stage_timeout_s: dict[str, float]
    # CPU threads a stage asks a Dask worker for under `python -m flows run --workers N` (same keys as above).
    stage_cpus: dict[str, int]

    def __post_init__(self):
        if "default" not in self.stage_timeout_s or any(v <= 0 for v in self.stage_timeout_s.values()):
            raise PipelineError("params.yaml: orchestration.stage_timeout_s needs a `default` and positive "
                                f"numbers of seconds, got {self.stage_timeout_s}")
        if "default" not in self.stage_cpus or any(v < 1 for v in self.stage_cpus.values()):
            raise PipelineError("params.yaml: orchestration.stage_cpus needs a `default` and whole numbers of "
                                f"CPU threads >= 1, got {self.stage_cpus}")

    def cpus_for(self, stage: str) -> int:
        return int(self.stage_cpus.get(stage.split("@")[0], self.stage_cpus["default"]))

    def timeout_for(self, stage: str) -> float:
        return float(self.stage_timeout_s.get(stage.split("@")[0], self.stage_timeout_s["default"]))
