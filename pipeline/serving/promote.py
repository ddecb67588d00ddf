"""promote: after a run, make its best model the registry's champion unless it is significantly worse.

    python -m pipeline promote [--seed N] [--json]

The challenger is the most accurate of params.yaml `promote.candidates` (empty: `train.models`) for the seed
(default: the first of `train.seeds`), by metrics/<name>/seed-<seed>.json. Challenger and champion are scored on
the SAME images, the current data/processed/test.npz: the challenger's predictions come from its evaluate stage
when dvc.lock shows they were made on exactly this file, else it is re-predicted; the champion's come from its
registry version when they were made on this file (same SHA-256), else it is re-evaluated from its registry copy.
The rule (`decide`, pure): accuracy below `promote.min_accuracy` -> refused; significantly worse (exact McNemar
p < `promote.alpha` and a lower accuracy) -> refused; byte-identical model files -> unchanged; else promoted.
No champion yet: the first eligible model becomes it. A promoted Keras model gets model.onnx (+ model.json)
in its version (pipeline.serving.export), for ONNX Runtime.

Every decision writes registry/promotions/<UTC stamp>-<decision>.json (atomic) and prints a summary (--json:
the record on stdout). Refused is a decision: exit 0. Missing inputs are a PipelineError. docs/production.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.data.convert import load_test_set
from pipeline.errors import PipelineError
from pipeline.metrics import mcnemar, predict_in_batches, wilson_interval
from pipeline.models import registry
from pipeline.params import EvaluateParams, TrainParams, load_params, section
from pipeline.runs import output_paths, run_dir, seed_of
from pipeline.serving import releases
from pipeline.serving.export import META_FILE, ONNX_FILE, ExportParams, export_model

PROMOTED, UNCHANGED, REFUSED = "promoted", "unchanged", "refused"
PROMOTIONS_DIR = "promotions"
# The champion's predictions on the test set it was scored on, kept in its version (no re-evaluation while the
# test set stays the same file).
PREDICTIONS_FILE = "test_predictions.npz"
MODEL_FILES = (registry.KERAS_FILE, registry.SKOPS_FILE)


@dataclass(frozen=True)
class PromoteParams:
    """params.yaml `promote` (every key required: params.yaml is the one home of these values)."""
    candidates: list[str]   # models the challenger is chosen from; empty = train.models
    alpha: float            # exact McNemar significance level for "significantly worse"
    min_accuracy: float     # test accuracy a challenger needs at least

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise PipelineError(f"params.yaml: promote.alpha must lie in (0, 1), got {self.alpha}")
        if not 0 <= self.min_accuracy <= 1:
            raise PipelineError(f"params.yaml: promote.min_accuracy must lie in [0, 1], got {self.min_accuracy}")
        if len(set(self.candidates)) != len(self.candidates):
            raise PipelineError(f"params.yaml: promote.candidates lists a model twice: {self.candidates}")


# ------------------------------------------------------------------------------ core (pure)
@dataclass(frozen=True)
class Score:
    """A model's accuracy on n test images, with its Wilson 95% interval."""
    correct: int
    n: int
    accuracy: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Decision:
    decision: str                 # promoted | unchanged | refused
    reason: str                   # one sentence
    challenger: Score
    champion: Score | None
    mcnemar: dict[str, Any] | None   # b: challenger right, champion wrong; c: the reverse; p_exact


def score(y_true: np.ndarray, y_pred: np.ndarray) -> Score:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0 or y_true.shape != y_pred.shape:
        raise PipelineError(f"predictions and labels differ in shape ({y_pred.shape} vs {y_true.shape})")
    correct = int(np.sum(y_true == y_pred))
    return Score(correct, len(y_true), correct / len(y_true), wilson_interval(correct, len(y_true)))


def decide(y_true: np.ndarray, challenger_pred: np.ndarray, champion_pred: np.ndarray | None = None, *,
           alpha: float, min_accuracy: float, identical: bool = False) -> Decision:
    """The promotion rule on paired predictions of the same test images (champion_pred None: no champion yet).

    identical: the challenger's model files are byte-identical to the champion's.
    """
    ch = score(y_true, challenger_pred)
    if ch.accuracy < min_accuracy:
        champ = None if champion_pred is None else score(y_true, champion_pred)
        test = None if champion_pred is None else mcnemar(y_true, challenger_pred, champion_pred)
        return Decision(REFUSED, f"the challenger's test accuracy {ch.accuracy:.4f} is below the minimum "
                                 f"{min_accuracy:g}", ch, champ, test)
    if champion_pred is None:
        return Decision(PROMOTED, f"no champion yet: the first model with at least {min_accuracy:g} test accuracy "
                                  f"({ch.accuracy:.4f}) becomes it", ch, None, None)
    champ = score(y_true, champion_pred)
    test = mcnemar(y_true, challenger_pred, champion_pred)
    p = test["p_exact"]
    if p < alpha and ch.accuracy < champ.accuracy:
        return Decision(REFUSED, f"the challenger is significantly worse than the champion ({ch.accuracy:.4f} vs "
                                 f"{champ.accuracy:.4f}; exact McNemar p = {p:.3g} < alpha {alpha:g})",
                        ch, champ, test)
    if identical:
        return Decision(UNCHANGED, "the challenger's model files are byte-identical to the champion's: "
                                   "the champion stays", ch, champ, test)
    relation = "better" if ch.accuracy > champ.accuracy else "not better" if ch.accuracy < champ.accuracy else "equal"
    return Decision(PROMOTED, f"the challenger is not significantly worse than the champion ({ch.accuracy:.4f} vs "
                              f"{champ.accuracy:.4f}, {relation}; exact McNemar p = {p:.3g}, alpha {alpha:g}) "
                              f"and meets the minimum accuracy {min_accuracy:g}", ch, champ, test)


def choose_challenger(accuracies: dict[str, float]) -> str:
    """The most accurate candidate; ties go to the first listed (params.yaml order)."""
    return max(accuracies, key=lambda name: (accuracies[name], -list(accuracies).index(name)))


def model_digest(model_dir: Path) -> str:
    """SHA-256 over the model's own files (model.keras / model.skops, by name): what "byte-identical" compares."""
    digest = hashlib.sha256()
    found = [name for name in MODEL_FILES if (Path(model_dir) / name).is_file()]
    if not found:
        raise PipelineError(f"{model_dir}: no {' or '.join(MODEL_FILES)} here",
                            hint="train the model first (dvc repro)")
    for name in found:
        digest.update(f"{name}\0{io.sha256_file(Path(model_dir) / name)}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ I/O shell
def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def evaluated_on(lock_path: Path, stage: str, test_path: Path, predictions: Path) -> bool:
    """Whether dvc.lock records `stage` as having read exactly `test_path` (its current bytes) and written exactly
    `predictions` (its current bytes): then those predictions are of this test set."""
    import yaml  # light, but only this check needs it

    if not (lock_path.is_file() and predictions.is_file()):
        return False
    try:
        entry = (yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage) or {}
    except yaml.YAMLError:
        return False

    def md5_of(entries, path: Path) -> str | None:   # dvc.lock paths are relative to its directory
        want = os.path.relpath(path, lock_path.parent)
        return next((e.get("md5") for e in entries or [] if os.path.normpath(str(e.get("path"))) == want), None)

    return (md5_of(entry.get("deps"), test_path) == _md5(test_path)
            and md5_of(entry.get("outs"), predictions) == _md5(predictions))


def _predict(model_dir: Path, x: np.ndarray, batch_size: int, label: str) -> np.ndarray:
    probs, _ = predict_in_batches(registry.load_predictor(model_dir, batch_size=batch_size), x, batch_size,
                                  label=label)
    return probs.argmax(axis=1)


def challenger_accuracies(metrics_dir: Path, names: list[str], seed: int) -> dict[str, float]:
    missing = [n for n in names if not output_paths(metrics_dir, n, seed)["metrics"].is_file()]
    if missing:
        raise PipelineError(f"no test metrics for {', '.join(missing)} (seed {seed}) in {metrics_dir}/: nothing "
                            "to promote from an incomplete run",
                            hint="run the pipeline first (dvc repro, or python -m flows run), or pass --seed")
    return {n: float(io.read_json(output_paths(metrics_dir, n, seed)["metrics"])["test"]["accuracy"]) for n in names}


def run_promotion(root: Path, raw: dict[str, Any], seed: int | None, *, models_dir: Path, metrics_dir: Path,
                  test_path: Path, lock_path: Path) -> dict[str, Any]:
    """Choose, score, decide, register (when promoted), write the record; return the record."""
    params = section(PromoteParams, "promote", raw)
    train = section(TrainParams, "train", raw)
    batch_size = section(EvaluateParams, "evaluate", raw).batch_size
    seed = seed_of(raw, seed)
    names = params.candidates or train.models
    unknown = [n for n in names if n not in train.models]
    if unknown:
        raise PipelineError(f"params.yaml: promote.candidates lists {', '.join(unknown)}, which train.models does "
                            "not train", hint="remove them from promote.candidates, or add them to train.models")
    if not Path(test_path).is_file():
        raise PipelineError(f"{test_path}: the test set is missing", hint="run the pipeline first (dvc repro)")
    accuracies = challenger_accuracies(metrics_dir, names, seed)
    name = choose_challenger(accuracies)
    model_dir = run_dir(models_dir, name, seed)
    if not (model_dir / "train.json").is_file():
        raise PipelineError(f"{model_dir}: the challenger `{name}` (seed {seed}) has metrics but no trained model",
                            hint=f"dvc repro train@{name}-{seed}")
    x, y = load_test_set(test_path)
    test_sha = io.sha256_file(test_path)

    predictions = output_paths(metrics_dir, name, seed)["predictions"]
    if evaluated_on(lock_path, f"evaluate@{name}-{seed}", test_path, predictions):
        stored = io.load_arrays(predictions)
        y_ch, ch_source = stored["y_pred"], f"{predictions} (dvc.lock: evaluated on this test set)"
        if not np.array_equal(stored["y_true"], y):
            raise PipelineError(f"{predictions}: labels differ from {test_path} though dvc.lock says otherwise",
                                hint=f"dvc repro --force evaluate@{name}-{seed}")
    else:
        y_ch = _predict(model_dir, x, batch_size, f"promote [{name}]: predicting the test set")
        ch_source = f"re-predicted from {model_dir} (no dvc.lock record of {predictions} on this test set)"
    ch_digest = model_digest(model_dir)

    current = releases.champion(root)
    y_champ, champ_eval = None, None
    if current is not None:
        kept = current.path / PREDICTIONS_FILE
        if current.meta.get("test_sha256") == test_sha and kept.is_file():
            y_champ = io.load_arrays(kept)["y_pred"]
            champ_eval = {"re_evaluated": False, "why": "its stored predictions are of this test set (same SHA-256)"}
        else:
            y_champ = _predict(current.path, x, batch_size, f"promote [champion v{current.number}]: re-evaluating")
            champ_eval = {"re_evaluated": True,
                          "why": f"the test set changed since it was scored (was {current.meta.get('test_sha256')}, "
                                 f"now {test_sha})"}
    identical = current is not None and current.meta.get("model_sha256") == ch_digest
    result = decide(y, y_ch, y_champ, alpha=params.alpha, min_accuracy=params.min_accuracy, identical=identical)

    after, registered = (current.number if current else None), False
    version = None
    if result.decision == PROMOTED:
        version, registered = _register(root, raw, name, seed, model_dir, ch_digest, test_sha, y, y_ch, x)
        after = version.number
    elif result.decision == UNCHANGED:
        version = current
    now = datetime.now(timezone.utc)
    record_path = releases.registry_dir(root) / PROMOTIONS_DIR / f"{now:%Y%m%dT%H%M%S.%fZ}-{result.decision}.json"
    record = {
        "decision": result.decision, "reason": result.reason, "decided_at": now.isoformat(timespec="seconds"),
        "rule": {"alpha": params.alpha, "min_accuracy": params.min_accuracy,
                 "test": "exact two-sided McNemar (binomial) on paired predictions of the same images",
                 "candidates": names},
        "test_set": {"path": str(test_path), "sha256": test_sha, "n": int(len(y))},
        "challenger": {"model": name, "seed": seed, "version": version.number if version else None,
                       "registered": registered, "model_sha256": ch_digest, **_figures(result.challenger),
                       "metrics_accuracy": accuracies[name], "predictions": ch_source,
                       "candidates_accuracy": accuracies},
        "champion": None if current is None else {
            "model": current.model, "seed": current.seed, "version": current.number,
            "model_sha256": current.meta.get("model_sha256"), **_figures(result.champion), **champ_eval},
        "mcnemar": None if result.mcnemar is None else {
            "b_challenger_right_champion_wrong": result.mcnemar["b"],
            "c_challenger_wrong_champion_right": result.mcnemar["c"], "p_exact": result.mcnemar["p_exact"]},
        "champion_before": current.number if current else None,
        "champion_after": after,
        "record": record_path.relative_to(releases.registry_dir(root)).as_posix(),
    }
    io.write_json(record_path, record)
    if result.decision == PROMOTED:
        releases.set_alias(root, releases.CHAMPION, version.number, model=name, seed=seed, record=record["record"])
    return record


def _figures(s: Score | None) -> dict[str, Any]:
    return {} if s is None else {"accuracy": s.accuracy, "ci95": list(s.ci95), "correct": s.correct, "n": s.n}


def _register(root: Path, raw: dict[str, Any], name: str, seed: int, model_dir: Path, digest: str, test_sha: str,
              y: np.ndarray, y_pred: np.ndarray, x: np.ndarray) -> tuple[releases.Version, bool]:
    """The challenger's version: an existing one holding the same model bytes, else a new one (with model.onnx
    for a Keras model). Returns (version, newly registered?)."""
    same = [v for v in releases.versions(root) if v.meta.get("model_sha256") == digest]
    if same:
        return same[-1], False
    base = releases.registry_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".promote-", dir=base))
    try:
        extra = {PREDICTIONS_FILE: staging / PREDICTIONS_FILE}
        io.save_arrays(extra[PREDICTIONS_FILE], y_true=np.asarray(y, dtype=np.uint8),
                       y_pred=np.asarray(y_pred, dtype=np.uint8))
        family = registry.read_train_meta(model_dir).get("family") or registry.get(name).family
        if (model_dir / registry.KERAS_FILE).is_file():
            export = section(ExportParams, "export", raw)
            export_model(name, model_dir, staging / "onnx", x[:export.check_images], max_abs_diff=export.max_abs_diff)
            extra |= {ONNX_FILE: staging / "onnx" / ONNX_FILE, META_FILE: staging / "onnx" / META_FILE}
        meta = {"family": family, "model_sha256": digest, "test_sha256": test_sha, "source": str(model_dir),
                "test_accuracy": float(np.mean(np.asarray(y_pred) == np.asarray(y))), "test_n": int(len(y))}
        return releases.register(root, name, seed, model_dir, extra_files=extra, meta=meta), True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def summary(record: dict[str, Any]) -> str:
    """A few lines for a person: the decision, both models' figures on the same images, the reason."""
    ch, champ, test = record["challenger"], record["champion"], record["mcnemar"]

    def line(role: str, m: dict[str, Any]) -> str:
        version = f" v{m['version']}" if m.get("version") else ""
        return (f"  {role:<10} {m['model']} (seed {m['seed']}){version}: accuracy {m['accuracy']:.4f} "
                f"(95% CI {m['ci95'][0]:.4f}-{m['ci95'][1]:.4f}) on {m['n']} test images")

    out = [f"promote: {record['decision'].upper()}: {record['reason']}", line("challenger", ch)]
    if champ:
        out.append(line("champion", champ) + (" (re-evaluated)" if champ["re_evaluated"] else ""))
    if test:
        out.append(f"  exact McNemar: {test['b_challenger_right_champion_wrong']} images only the challenger gets "
                   f"right, {test['c_challenger_wrong_champion_right']} only the champion; p = {test['p_exact']:.3g} "
                   f"(alpha {record['rule']['alpha']:g})")
    before, after = record["champion_before"], record["champion_after"]
    out.append(f"  champion: {'none' if before is None else f'v{before}'} -> {'none' if after is None else f'v{after}'}"
               f"; record: registry/{record['record']}")
    return "\n".join(out)


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    parser.add_argument("--seed", type=int, default=None, help="which run (default: the first of train.seeds)")
    parser.add_argument("--json", action="store_true", help="print the promotion record as JSON on stdout "
                                                            "(the summary goes to stderr)")
    # Path defaults kept on purpose: run by hand and by the flow after a run; they are the paths dvc.yaml gives
    # the stages that write these inputs (tests/test_params.py keeps them equal).
    parser.add_argument("--models-dir", type=Path, default=Path("models"),
                        help="trained runs: <dir>/<model>/seed-<seed>")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"),
                        help="the evaluate stage's outputs: <dir>/<model>/seed-<seed>.json")
    parser.add_argument("--test", type=Path, default=Path("data/processed/test.npz"),
                        help="the test set both models are scored on")


def cli(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raw = load_params(args.params)
    record = run_promotion(Path("."), raw, args.seed, models_dir=args.models_dir, metrics_dir=args.metrics,
                           test_path=args.test, lock_path=Path("dvc.lock"))
    if args.json:
        print(json.dumps(record, indent=2))
        print(summary(record), file=sys.stderr)
    else:
        print(summary(record))
