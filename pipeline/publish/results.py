"""Loading what earlier stages wrote, into one ModelResult per model over all its seeds.

Reads metrics/<name>/seed-<seed>.json + .predictions.npz (evaluate) and models/<name>/seed-<seed>/train.json +
history.csv (train), and checks they describe the same model, seed and test set, so that every table and figure
after this point can trust them. Also the one rule for "does a published claim hold" (ModelResult.claim_holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.metrics import wilson_interval
from pipeline.models import registry
from pipeline.runs import output_paths, run_dir


@dataclass
class SeedRun:
    """One trained-and-evaluated run of a model: metrics/<name>/seed-<seed>.* and models/<name>/seed-<seed>/."""
    seed: int
    metrics: dict[str, Any]        # metrics/<name>/seed-<seed>.json
    train_meta: dict[str, Any]     # models/<name>/seed-<seed>/train.json
    history: Any                   # pandas DataFrame (history.csv) or None
    y_pred: np.ndarray

    @property
    def accuracy(self) -> float:
        return 100.0 * self.metrics["test"]["accuracy"]


@dataclass
class ModelResult:
    """A model over all its seeds. Accuracy figures are means over seeds; the per-image views (McNemar,
    confusion matrices, curves, sample grids) use the first seed's run, `runs[0]`."""
    name: str
    spec: Any                      # registry.ModelSpec
    runs: list[SeedRun]            # in params.yaml train.seeds order
    y_true: np.ndarray

    @property
    def metrics(self) -> dict[str, Any]:
        return self.runs[0].metrics

    @property
    def train_meta(self) -> dict[str, Any]:
        return self.runs[0].train_meta

    @property
    def history(self):
        return self.runs[0].history

    @property
    def y_pred(self) -> np.ndarray:
        return self.runs[0].y_pred

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def accuracies(self) -> list[float]:
        return [run.accuracy for run in self.runs]

    @property
    def accuracy(self) -> float:
        """Test accuracy (%), the mean over seeds."""
        return float(np.mean(self.accuracies))

    @property
    def accuracy_std(self) -> float | None:
        """Sample standard deviation (pp) of the test accuracy over seeds; None with a single seed."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.runs) > 1 else None

    @property
    def ci95(self) -> tuple[float, float]:
        """Wilson 95% interval (%) for the test accuracy of one run (test-set sampling). With one seed it is the
        evaluate stage's; with several, the interval of a run whose correct count is the mean over seeds, rounded
        to a whole number of images (the interval is about a count of correct images)."""
        n = int(self.metrics["test"]["n"])
        if len(self.runs) == 1:
            test = self.metrics["test"]
            return 100 * test["accuracy_ci95_low"], 100 * test["accuracy_ci95_high"]
        low, high = wilson_interval(int(round(self.accuracy / 100 * n)), n, 0.95)
        return 100 * low, 100 * high

    @property
    def verdict_interval(self) -> tuple[float, float]:
        """The interval (%) a published claim must fall in to count as reproduced: the Wilson 95% CI widened by
        the seed spread, combining the two half-widths in quadrature with 2 standard deviations over seeds
        (the original benchmark's mean +- 2 std). With one seed it is the Wilson CI itself."""
        low, high = self.ci95
        spread = 2 * (self.accuracy_std or 0.0)
        mean = self.accuracy
        return mean - math.hypot(mean - low, spread), mean + math.hypot(high - mean, spread)

    def claim_holds(self, claim: float | None) -> bool | None:
        """Whether a published accuracy (%) lies inside our verdict interval; None when there is no claim."""
        if claim is None:
            return None
        low, high = self.verdict_interval
        return bool(low <= claim <= high)

    @property
    def published(self) -> dict[str, Any]:
        return dict(self.spec.published or {})

    @property
    def claim_verdict(self) -> bool | None:
        """claim_holds for this model's own published accuracy: the verdict every table, note and card shows."""
        return self.claim_holds(published_accuracy(self)[0])

    @property
    def stand_in_for(self) -> str | None:
        return self.train_meta.get("stand_in_for") or self.metrics.get("stand_in_for")


def published_accuracy(result: ModelResult) -> tuple[float | None, str]:
    """The published accuracy (%) a model is compared with, and what kind of number it is (None: no claim)."""
    pub = result.published
    if "accuracy" in pub:
        return float(pub["accuracy"]), str(pub.get("accuracy_kind", "accuracy (kind not stated)"))
    if "target_accuracy" in pub:
        return None, f"no published claim ({pub.get('accuracy_kind', 'target')}: {pub['target_accuracy']:.2f})"
    return None, "no published claim"


def claim_is_test_accuracy(kind: str) -> bool:
    return kind.lower().startswith("test accuracy")


def ranked(results: Sequence[ModelResult]) -> list[ModelResult]:
    return sorted(results, key=lambda r: (-r.accuracy, r.name))


def last_epoch(history) -> dict[str, float | None]:
    """The last epoch's train and validation accuracy (%) from history.csv; None where absent or NaN."""
    if history is None or len(history) == 0:
        return {"accuracy": None, "val_accuracy": None}
    last = history.iloc[-1]
    return {k: (None if last[k] != last[k] else 100.0 * float(last[k])) for k in ("accuracy", "val_accuracy")}


def _read_history(path: Path, name: str, seed: int, family: str):
    import pandas as pd

    history = None
    if path.exists():
        history = pd.read_csv(path)
        absent = [c for c in io.HISTORY_COLUMNS if c not in history.columns]
        if absent:
            raise PipelineError(f"{path}: missing column(s) {', '.join(absent)}")
    if family == "keras" and (history is None or len(history) == 0):
        raise PipelineError(f"{path}: missing or empty (a Keras model must have its per-epoch history)",
                            hint=f"re-run `dvc repro train@{name}-{seed}`")
    return history


def load_results(names: Sequence[str], metrics_dir: Path, models_dir: Path,
                 seeds: Sequence[int]) -> list[ModelResult]:
    """Read every configured (model, seed) run's outputs; fail naming ALL runs whose outputs are missing, so one
    error message lists everything `dvc repro` still has to run."""
    if not names:
        raise PipelineError("params.yaml: train.models is empty: there is nothing to publish")
    if not seeds:
        raise PipelineError("params.yaml: train.seeds is empty: there is nothing to publish")
    for name in names:
        registry.get(name)  # unknown names fail with the list of valid ones
    missing: list[str] = []
    for name in names:
        for seed in seeds:
            paths = output_paths(metrics_dir, name, seed)
            for key in ("metrics", "predictions"):
                if not paths[key].exists():
                    missing.append(f"{name}-{seed} ({paths[key]} missing)")
            if not (run_dir(models_dir, name, seed) / "train.json").exists():
                missing.append(f"{name}-{seed} ({run_dir(models_dir, name, seed) / 'train.json'} missing)")
    if missing:
        first = missing[0].split(" ")[0]
        raise PipelineError(
            "no evaluation results for run(s) of train.models x train.seeds: " + "; ".join(missing),
            hint=f"run `dvc repro evaluate@{first}` for each (or `dvc repro` for all), "
                 "or remove the model from params.yaml train.models / the seed from train.seeds")
    results = []
    y_ref = None
    for name in names:
        spec = registry.get(name)
        runs = []
        for seed in seeds:
            paths = output_paths(metrics_dir, name, seed)
            metrics = io.read_json(paths["metrics"])
            if metrics.get("model") != name:
                raise PipelineError(f"{paths['metrics']}: describes model `{metrics.get('model')}`, not `{name}`")
            pred = io.load_arrays(paths["predictions"])
            if y_ref is None:
                y_ref = pred["y_true"]
            elif not np.array_equal(pred["y_true"], y_ref):
                raise PipelineError(
                    f"{paths['predictions']}: evaluated on a different test set than `{names[0]}`",
                    hint="re-run the evaluate stages so that all use the same data/processed/test.npz")
            if int(np.sum(pred["y_pred"] == pred["y_true"])) != metrics["test"]["correct"]:
                raise PipelineError(f"{paths['predictions']} disagrees with {paths['metrics']}",
                                    hint=f"re-run `dvc repro evaluate@{name}-{seed}`")
            model_dir = run_dir(models_dir, name, seed)
            train_meta = io.read_json(model_dir / "train.json")
            if train_meta.get("seed") not in (None, seed):
                raise PipelineError(f"{model_dir}/train.json records seed {train_meta.get('seed')}, not {seed}",
                                    hint=f"re-run `dvc repro train@{name}-{seed}`")
            history = _read_history(model_dir / "history.csv", name, seed, spec.family)
            runs.append(SeedRun(seed, metrics, train_meta, history, pred["y_pred"]))
        results.append(ModelResult(name, spec, runs, y_ref))
    return results
