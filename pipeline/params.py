"""params.yaml -> typed, validated settings: one dataclass per stage section.

Each stage reads only its own section. Unknown or missing keys are errors that name the key,
so a typo in params.yaml fails loudly instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
    """Construct dataclass `cls` from mapping `raw`, rejecting unknown and missing keys."""
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: `{where}` must be a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise PipelineError(
            f"params.yaml: unknown key(s) in `{where}`: {', '.join(unknown)}",
            hint=f"valid keys are: {', '.join(sorted(names))}",
        )
    required = {
        f.name for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(raw))
    if missing:
        raise PipelineError(f"params.yaml: missing key(s) in `{where}`: {', '.join(missing)}")
    return cls(**raw)


def section(cls: type[T], name: str, params: dict[str, Any] | None = None, path: str | Path = DEFAULT_PARAMS) -> T:
    params = load_params(path) if params is None else params
    if name not in params:
        raise PipelineError(f"params.yaml: section `{name}` is missing")
    return build(cls, params[name], name)


@dataclass(frozen=True)
class FetchParams:
    # A directory holding the official IDX files (.gz or not) or Kaggle CSVs, or an http(s) URL of a mirror.
    source: str
    # Keep only the first N rows of each split (None = all). For quick trials and tests; the
    # validate stage's expected row counts must agree.
    max_rows: int | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ValidateParams:
    expected_rows: dict[str, int] = field(default_factory=lambda: {"train": 60000, "test": 10000})
    # Each class's share of a split must lie within 1/10 +- this tolerance (absolute share).
    class_share_tolerance: float = 0.02
    # How many offending rows/columns a failure message lists.
    max_examples: int = 5


@dataclass(frozen=True)
class ConvertParams:
    # Also write the PNG tree data/images/<split>/<class>/<index>.png (paper A's layout).
    images: bool = False
    image_workers: int = 0  # 0 = one per CPU core


@dataclass(frozen=True)
class SplitParams:
    train_size: int = 48000
    val_size: int = 12000
    seed: int = 42
