"""publish stage: comparison tables (ours vs published) and figures, written to reports/ as ONE atomic swap.

    python -m pipeline publish --metrics metrics --models-dir models --test data/processed/test.npz \
        --class-counts data/split/class_counts.json --out reports --summary accuracy.json

Reads only earlier stages' outputs for every model in `train.models` and seed in `train.seeds`
(metrics/<name>/seed-<seed>.json + .predictions.npz, models/<name>/seed-<seed>/train.json + history.csv),
data/split/class_counts.json, the test images for the sample grid, and the published claims in
pipeline.models.registry. Writes reports/comparison.{md,csv,html} and reports/figures/*.png (the HTML is
self-contained, figures embedded as base64 PNG), a model card per model in reports/model-cards/<model>.md
(pipeline.model_card), then accuracy.json, the DVC metrics file. Everything is
rendered into a temporary directory and swapped in for reports/ only on success, so a failure never leaves a
half-updated report.

Every model in `train.models` must have been evaluated with every seed: a missing run is an error naming it.
With several seeds, accuracies are means over seeds with their standard deviation, and a published claim
"holds" when it lies inside the Wilson CI widened by the seed spread (ModelResult.verdict_interval).
Not about: computing metrics (pipeline.evaluate) or drawing details (pipeline.plots).
"""

from __future__ import annotations

import base64
import csv
import html
import io as _stdio
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.evaluate import confusion_matrix, holm_adjust, mcnemar, output_paths, per_class_report
from pipeline.schema import CLASS_NAMES

# Literature context (NOT from the two papers and NOT our results); used only in the reproducibility note.
BEST_PUBLISHED_TEST_ACCURACY = 96.9   # % on the official 10k test set, best published results (approx.)
# A circulating literature figure, by a method and threshold we do not know; the report cites it only beside
# our own measurement (the validate stage's near-duplicate count on the data in hand).
LITERATURE_NEAR_DUPLICATE_SHARE = 5.98

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s")


# ------------------------------------------------------------------------------ inputs
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
        """Wilson 95% interval (%) for the test accuracy of one run at the mean accuracy (test-set sampling)."""
        from pipeline.evaluate import wilson_interval

        n = int(self.metrics["test"]["n"])
        if len(self.runs) == 1:
            test = self.metrics["test"]
            return 100 * test["accuracy_ci95_low"], 100 * test["accuracy_ci95_high"]
        low, high = wilson_interval(int(round(self.accuracy / 100 * n)), n)
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
        if claim is None:
            return None
        low, high = self.verdict_interval
        return bool(low <= claim <= high)

    @property
    def published(self) -> dict[str, Any]:
        return dict(self.spec.published or {})

    @property
    def stand_in_for(self) -> str | None:
        return self.train_meta.get("stand_in_for") or self.metrics.get("stand_in_for")


def _read_history(path: Path, name: str, seed: int, family: str):
    import pandas as pd

    history = None
    if path.exists():
        history = pd.read_csv(path)
        absent = [c for c in HISTORY_COLUMNS if c not in history.columns]
        if absent:
            raise PipelineError(f"{path}: missing column(s) {', '.join(absent)}")
    if family == "keras" and (history is None or len(history) == 0):
        raise PipelineError(f"{path}: missing or empty (a Keras model must have its per-epoch history)",
                            hint=f"re-run `dvc repro train@{name}-{seed}`")
    return history


def load_results(names: Sequence[str], metrics_dir: Path, models_dir: Path,
                 seeds: Sequence[int] = (42,)) -> list[ModelResult]:
    """Read every configured (model, seed) run's outputs; fail naming ALL runs whose outputs are missing."""
    from pipeline.models import registry
    from pipeline.train import run_dir

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


# ------------------------------------------------------------------------------ formatting
def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def _as_pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * float(fraction)


@dataclass
class Table:
    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


def markdown_table(table: Table) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {' | '.join(esc(h) for h in table.headers)} |", "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += [f"| {' | '.join(esc(c) for c in row)} |" for row in table.rows]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------------------ tables (pure)
def published_accuracy(result: ModelResult) -> tuple[float | None, str]:
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


def comparison_records(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """Table 1 as machine-readable records (full precision): also the CSV."""
    records = []
    for rank, r in enumerate(ranked(results), 1):
        test, train, inf = r.metrics["test"], r.metrics["train"], r.metrics["inference"]
        claim, kind = published_accuracy(r)
        (ci_low, ci_high), (verdict_low, verdict_high) = r.ci95, r.verdict_interval
        records.append({
            "rank": rank, "model": r.name, "source": r.spec.source, "family": r.spec.family,
            "stand_in_for": r.stand_in_for or "",
            "published_accuracy_pct": claim, "published_accuracy_kind": kind,
            "test_accuracy_pct": r.accuracy,
            "seeds": " ".join(str(seed) for seed in r.seeds),
            "test_accuracy_std_pp": r.accuracy_std,
            "gap_pp": None if claim is None else r.accuracy - claim,
            "ci95_low_pct": ci_low, "ci95_high_pct": ci_high,
            "verdict_low_pct": verdict_low, "verdict_high_pct": verdict_high,
            "claim_holds": r.claim_holds(claim),
            "test_n": test["n"], "test_log_loss": test["log_loss"], "macro_f1": test["macro"]["f1"],
            "params_ours": r.metrics.get("params_count"), "params_published": r.published.get("params"),
            "train_time_s": train.get("train_time_s"), "epochs": train.get("epochs"),
            "train_device": train.get("device"), "inference_device": inf.get("device"),
            "latency_batch1_ms": inf.get("latency_batch1_median_ms"),
            "throughput_img_per_s": inf.get("throughput_img_per_s"),
            "model_size_bytes": r.metrics.get("model_size_bytes"),
        })
    return records


def table_ranking(records: list[dict[str, Any]]) -> Table:
    n_test = records[0]["test_n"]
    rows = []
    for rec in records:
        model = rec["model"] + (f" (stand-in for {rec['stand_in_for']})" if rec["stand_in_for"] else "")
        n_seeds = len(rec["seeds"].split())
        spread = (f"± {rec['test_accuracy_std_pp']:.2f} ({n_seeds} seeds)" if rec["test_accuracy_std_pp"] is not None
                  else "— (1 seed)")
        holds = {None: "—", True: "yes", False: "no"}[rec["claim_holds"]]
        rows.append([
            str(rec["rank"]), model, rec["source"], _pct(rec["published_accuracy_pct"]),
            rec["published_accuracy_kind"], _pct(rec["test_accuracy_pct"]), spread, _signed(rec["gap_pp"]),
            f"{rec['ci95_low_pct']:.2f}–{rec['ci95_high_pct']:.2f}", holds, _int(rec["params_ours"]),
            _int(rec["params_published"]), _num(rec["train_time_s"], 1), str(rec["train_device"] or "—"),
            _num(rec["latency_batch1_ms"], 2), _num(rec["throughput_img_per_s"], 0),
            _num((rec["model_size_bytes"] or 0) / 1e6, 2),
        ])
    return Table(
        "ranking", f"1. All models ranked by test accuracy (official test set, {n_test:,} images)",
        ["#", "model", "source", "published %", "what the published number is", "ours: test % (mean over seeds)",
         "ours: std over seeds (pp)", "ours − published (pp)", "ours: 95% CI", "claim holds?", "params (ours)",
         "params (published)", "train time (s)",
         "train device", "batch-1 latency (ms)", "batch-1024 throughput (img/s)", "model size (MB)"],
        rows,
        "Accuracies in percent. 95% CI: Wilson score interval over the test images (at the mean accuracy when "
        "there are several seeds). 'Claim holds' when the published number lies inside that interval widened by "
        "the seed spread (half-widths combined in quadrature with 2 standard deviations over seeds; with one seed, "
        "the interval itself). Train time, device, latency, throughput and size are the first seed's run. "
        "The gap compares numbers of "
        "different kinds where the published figure is not a test accuracy (see its description). Parameter "
        "counts for scikit-learn models are the number of fitted numeric values.")


def table_paper_a(results: Sequence[ModelResult], val_size: int | None = None) -> Table | None:
    rows = []
    for r in results:
        pub = r.published
        if r.spec.source != "Paper A" or "tf1_train_loss" not in pub:
            continue
        t, tr = r.metrics["test"], r.metrics["train"]
        rows.append([
            r.name,
            *[_num(pub.get(f"tf1_{k}"), 2) for k in ("train_loss", "test_loss")],
            *[_pct(pub.get(f"tf1_{k}")) for k in ("train_accuracy", "test_accuracy")],
            *[_num(pub.get(f"tf2_{k}"), 2) for k in ("train_loss", "test_loss")],
            *[_pct(pub.get(f"tf2_{k}")) for k in ("train_accuracy", "test_accuracy")],
            _num(tr.get("train_loss"), 3), _num(t.get("log_loss"), 3),
            _pct(_as_pct(tr.get("train_accuracy"))), _pct(_as_pct(tr.get("val_accuracy"))), _pct(r.accuracy),
        ])
    if not rows:
        return None
    return Table(
        "paper_a", "2. Paper A Table 2 analogue: loss and accuracy, published (TF1, TF2) vs ours",
        ["model", "TF1 train loss", "TF1 test loss", "TF1 train %", "TF1 test %", "TF2 train loss",
         "TF2 test loss", "TF2 train %", "TF2 test %", "ours train loss", "ours test loss", "ours train %",
         "ours val %", "ours test %"],
        rows,
        "Paper A's TF2 'test' accuracies equal its Table 1 'validation accuracy' figures. Our train loss/accuracy "
        "are the last epoch's Keras running averages (dropout active); our val figures are on the held-out "
        f"validation split{f' ({val_size:,} images)' if val_size else ''}; our test figures are on the official "
        f"test set ({results[0].metrics['test']['n']:,} images). With several seeds, the test % is the mean over "
        "seeds and the other figures are the first seed's run.")


def table_paper_b_classes(results: Sequence[ModelResult]) -> Table | None:
    by_name = {r.name: r for r in results}
    published_model = next((r for r in results if "class_report" in r.published), None)
    if published_model is None:
        return None
    report = published_model.published["class_report"]
    ours = {name: per_class_report(confusion_matrix(r.y_true, r.y_pred))
            for name, r in by_name.items() if r.spec.source == "Paper B"}
    headers = ["class", "published P", "published R", "published F1"]
    for name in ours:
        headers += [f"{name} P", f"{name} R", f"{name} F1", f"{name} F1 − published"]
    rows = []
    for cls in CLASS_NAMES:
        pub = report.get(cls, {})
        row = [cls, _num(pub.get("precision"), 2), _num(pub.get("recall"), 2), _num(pub.get("f1"), 2)]
        for rep in ours.values():
            o = rep[cls]
            gap = None if pub.get("f1") is None else o["f1"] - pub["f1"]
            row += [_num(o["precision"], 3), _num(o["recall"], 3), _num(o["f1"], 3),
                    "—" if gap is None else f"{gap:+.3f}"]
        rows.append(row)
    return Table(
        "paper_b_classes", "3a. Paper B class-wise precision / recall / F1 (test set), published vs ours",
        headers, rows,
        f"Published: {published_model.published.get('class_report_kind', 'paper B')} "
        f"(model `{published_model.name}`). Ours: computed from each model's test-set predictions.")


def _last_epoch(history) -> dict[str, float | None]:
    if history is None or len(history) == 0:
        return {"accuracy": None, "val_accuracy": None}
    last = history.iloc[-1]
    return {k: (None if last[k] != last[k] else 100.0 * float(last[k])) for k in ("accuracy", "val_accuracy")}


def table_paper_b_dropout(results: Sequence[ModelResult]) -> Table | None:
    rows = []
    for r in results:
        if r.spec.source != "Paper B":
            continue
        pub = r.published
        pub_train = pub.get("train_accuracy")
        pub_val = pub.get("val_accuracy", pub.get("accuracy") if "validation" in str(pub.get("accuracy_kind", ""))
                          else None)
        pub_test = pub.get("accuracy") if claim_is_test_accuracy(str(pub.get("accuracy_kind", ""))) else None
        last = _last_epoch(r.history)
        best_val = None if r.history is None else 100.0 * float(r.history["val_accuracy"].max())
        rows.append([
            r.name, _pct(pub_train), _pct(pub_val), _pct(pub_test),
            _signed(None if pub_train is None or pub_val is None else pub_train - pub_val),
            _pct(last["accuracy"]), _pct(last["val_accuracy"]), _pct(best_val), _pct(r.accuracy),
            _signed(None if last["accuracy"] is None or last["val_accuracy"] is None
                    else last["accuracy"] - last["val_accuracy"]),
            str(len(r.history)) if r.history is not None else "—",
        ])
    if not rows:
        return None
    return Table(
        "paper_b_dropout", "3b. Paper B with vs without dropout: overfitting (train − validation accuracy)",
        ["model", "published train %", "published val %", "published test %", "published train − val (pp)",
         "ours train % (last epoch)", "ours val % (last epoch)", "ours best val %", "ours test %",
         "ours train − val (pp)", "epochs"],
        rows,
        "Published numbers are 'about' values from paper B's text. Our train accuracy is Keras' running average "
        "over the last epoch with dropout active, which understates the accuracy of the final weights on the "
        "training data.")


def mcnemar_records(results: Sequence[ModelResult], top: int, alpha: float) -> list[dict[str, Any]]:
    best = ranked(results)[:top]
    pairs = list(itertools.combinations(best, 2))
    tests = [mcnemar(a.y_true, a.y_pred, b.y_pred) for a, b in pairs]
    adjusted = holm_adjust([t["p_exact"] for t in tests]) if tests else []
    return [{"model_a": a.name, "model_b": b.name, "accuracy_a_pct": a.accuracy, "accuracy_b_pct": b.accuracy,
             **t, "p_holm": p_adj, "significant": p_adj < alpha}
            for (a, b), t, p_adj in zip(pairs, tests, adjusted)]


def table_mcnemar(records: list[dict[str, Any]], alpha: float) -> Table:
    rows = [[r["model_a"], r["model_b"], _pct(r["accuracy_a_pct"]), _pct(r["accuracy_b_pct"]), str(r["b"]),
             str(r["c"]), f"{r['p_exact']:.3g}", f"{r['chi2_cc']:.2f}", f"{r['p_holm']:.3g}",
             "yes" if r["significant"] else "no"] for r in records]
    return Table(
        "mcnemar", "4. McNemar tests between the most accurate models (paired, same test images)",
        ["model A", "model B", "A test %", "B test %", "A right, B wrong", "A wrong, B right", "p (exact)",
         "χ² (cont. corr.)", "p (Holm)", f"significant at α={alpha:g}"],
        rows,
        "Exact two-sided binomial McNemar test on the discordant pairs; Holm-Bonferroni adjustment over all pairs "
        "shown. 'no' means the test set cannot tell the two models apart at this level. With several seeds, each "
        "model's first seed is tested; the accuracies shown are means over seeds.")


# ------------------------------------------------------------------------------ note (built from numbers)
def _tf1_sentence(paper_a: Sequence[ModelResult]) -> str:
    tf1 = [r.published["tf1_test_accuracy"] for r in paper_a if "tf1_test_accuracy" in r.published]
    if not tf1:
        return ""
    ours = [r.accuracy for r in paper_a]
    return (f" Paper A's own TF1 run reported {_span(tf1)}% test accuracy for these models; "
            f"we measure {_span(ours)}%.")


def _span(values: Sequence[float]) -> str:
    """'90.35' for one value (or equal values), '90.35–91.72' for a range."""
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return low if low == high else f"{low}–{high}"


def near_duplicate_sentence(near: dict[str, Any] | None) -> str:
    """The leakage caveat, from the validate stage's measurement on the data in hand (report.json)."""
    if not near:
        return ("The share of test images that are near-duplicates of training images was not measured for this "
                f"run (a figure of about {LITERATURE_NEAR_DUPLICATE_SHARE:.2f}% circulates in the literature); ")
    return (f"{100 * near['share']:.2f}% of the test images ({near['count']:,}) have a training image within RMS "
            f"pixel difference {near['max_rms']:g} (measured by the validate stage on these data; a figure of about "
            f"{LITERATURE_NEAR_DUPLICATE_SHARE:.2f}% circulates in the literature, by a method not stated), so test "
            "accuracy on Fashion-MNIST is itself somewhat optimistic; ")


def reproducibility_note(results: Sequence[ModelResult], mcnemar_rows: list[dict[str, Any]],
                         train_size: int | None = None, near_duplicates: dict[str, Any] | None = None) -> list[str]:
    order = ranked(results)
    best = order[0]
    n = best.metrics["test"]["n"]
    low, high = best.ci95
    spread = (f", mean of {len(best.runs)} seeds, standard deviation {best.accuracy_std:.2f} pp"
              if best.accuracy_std is not None else "")
    lines = [
        f"Our most accurate model on the official {n:,}-image test set is `{best.name}` at {best.accuracy:.2f}% "
        f"(95% CI {low:.2f}–{high:.2f}%{spread}). Choosing the best "
        "model by test accuracy makes this figure slightly optimistic."]
    paper_a = [r for r in results if r.spec.source == "Paper A" and "accuracy" in r.published]
    if paper_a:
        top_claim = max(paper_a, key=lambda r: r.published["accuracy"])
        parts = ", ".join(f"`{r.name}` {r.published['accuracy']:.2f}% claimed vs {r.accuracy:.2f}% measured "
                          f"({r.accuracy - r.published['accuracy']:+.2f} pp)" for r in paper_a)
        inside = [r.name for r in paper_a if r.claim_holds(r.published["accuracy"])]
        lines.append(
            f"Paper A's headline figures are {top_claim.published.get('accuracy_kind', 'validation accuracy')}, "
            f"not held-out test accuracy: {parts}. "
            + (f"The claims lie inside our 95% CI (widened by the seed spread) for: {', '.join(inside)}. " if inside
               else "None of these claims lies inside our 95% confidence interval, even widened by the seed "
                    "spread. ")
            + f"The best results published on the official test set are about {BEST_PUBLISHED_TEST_ACCURACY:.1f}%; "
            f"paper A's {top_claim.published['accuracy']:.2f}% would exceed that by "
            f"{top_claim.published['accuracy'] - BEST_PUBLISHED_TEST_ACCURACY:.2f} pp with a "
            f"{top_claim.published.get('params', 0):,}-parameter CNN trained for "
            f"{top_claim.published.get('epochs', '?')} "
            "epochs, which is not credible as a test-set accuracy."
            + _tf1_sentence(paper_a))
    test_claims = [r for r in results if "accuracy" in r.published
                   and claim_is_test_accuracy(str(r.published.get("accuracy_kind", "")))]
    if test_claims:
        within = [r for r in test_claims if r.claim_holds(r.published["accuracy"])]
        gaps = [r.accuracy - r.published["accuracy"] for r in test_claims]
        lines.append(
            f"Of the {len(test_claims)} published test-set accuracies we re-measured, {len(within)} lie inside our "
            f"95% CI, widened by the seed spread ({', '.join(r.name for r in within) or 'none'}); "
            f"gaps (ours − published) range from "
            f"{min(gaps):+.2f} to {max(gaps):+.2f} pp."
            + (f" Our benchmark baselines were trained on the {train_size:,}-image training split, not on all "
               "60,000 training images as in the original benchmark." if train_size and train_size < 60000 else ""))
    by_name = {r.name: r for r in results}
    for name in ("paper-b-cnn", "paper-b-cnn-dropout"):
        r = by_name.get(name)
        if r is None or r.history is None:
            continue
        last = _last_epoch(r.history)
        pub = r.published
        pub_train = pub.get("train_accuracy")
        pub_val = pub.get("val_accuracy", pub.get("accuracy"))
        if pub_train is not None and pub_val is not None and last["accuracy"] is not None:
            lines.append(
                f"Paper B `{name}`: published ≈{pub_train:.1f}% train vs ≈{pub_val:.1f}% validation "
                f"({pub_train - pub_val:+.1f} pp); ours {last['accuracy']:.2f}% vs {last['val_accuracy']:.2f}% "
                f"after {len(r.history)} epochs ({last['accuracy'] - last['val_accuracy']:+.2f} pp); "
                f"test {r.accuracy:.2f}%.")
    stand_ins = [r for r in results if r.stand_in_for]
    for r in stand_ins:
        claim = published_accuracy(r)[0]
        lines.append(f"`{r.name}` is a stand-in ({r.spec.description}): its {r.accuracy:.2f}% is not a "
                     f"reproduction of the {'published ' + format(claim, '.2f') + '% for ' if claim else ''}"
                     f"{r.stand_in_for}.")
    if mcnemar_rows:
        same = [f"{m['model_a']} vs {m['model_b']}" for m in mcnemar_rows if not m["significant"]]
        n_top = len({m["model_a"] for m in mcnemar_rows} | {m["model_b"] for m in mcnemar_rows})
        lines.append(f"McNemar tests among the top {n_top} "
                     f"models: {len(mcnemar_rows) - len(same)} of {len(mcnemar_rows)} pairs differ significantly"
                     + (f"; not distinguishable: {', '.join(same)}." if same else "."))
    lines.append(
        near_duplicate_sentence(near_duplicates)
        + "validation accuracy on a split of the training set (as paper A reports) can be higher still and is "
          "not comparable with test accuracy.")
    return lines


# ------------------------------------------------------------------------------ figures
def render_figures(results: Sequence[ModelResult], fig_dir: Path, *, x_test: np.ndarray | None,
                   class_counts: dict[str, Any] | None, sample_images: int, dpi: int) -> list[tuple[str, Path]]:
    """Draw every figure into fig_dir; return [(caption, path)] in report order."""
    from pipeline import plots

    figures: list[tuple[str, Path]] = []
    order = ranked(results)
    best = order[0]
    comparison = [{"model": r.name + (" (stand-in)" if r.stand_in_for else ""), "accuracy": r.accuracy,
                   "ci_low": r.verdict_interval[0], "ci_high": r.verdict_interval[1],
                   "published": published_accuracy(r)[0],
                   "published_is_test": claim_is_test_accuracy(published_accuracy(r)[1])} for r in order]
    figures.append(("Test accuracy of every model with published claims marked",
                    plots.accuracy_comparison(comparison, fig_dir / "accuracy_comparison.png", dpi,
                                              n_test=best.metrics["test"]["n"])))
    cnns = {r.name: r.history for r in results if r.spec.family == "keras" and r.history is not None}
    for name, history in cnns.items():
        figures.append((f"{name}: training and validation curves",
                        plots.training_curves(name, history, fig_dir / f"curves_{name}.png", dpi)))
    if cnns:
        figures.append(("Time per epoch per CNN", plots.epoch_times(cnns, fig_dir / "epoch_time.png", dpi)))
    confusion_models = [best] + [r for r in results if r.spec.source in ("Paper A", "Paper B") and r is not best]
    for r in confusion_models:
        label = f"{r.name} (best model)" if r is best else r.name
        figures.append((f"Confusion matrix: {label}",
                        plots.confusion_heatmap(label, confusion_matrix(r.y_true, r.y_pred),
                                                fig_dir / f"confusion_{r.name}.png", dpi)))
    if x_test is not None:
        ok = np.flatnonzero(best.y_pred == best.y_true)
        wrong = np.flatnonzero(best.y_pred != best.y_true)
        pick = lambda idx: idx[np.unique(np.linspace(0, len(idx) - 1, min(sample_images, len(idx))).astype(int))] \
            if len(idx) else idx  # noqa: E731 - evenly spread over the test set, deterministic
        figures.append((f"Correct and misclassified test images: {best.name}",
                        plots.sample_grid(best.name, x_test, best.y_true, best.y_pred, pick(ok).tolist(),
                                          pick(wrong).tolist(), fig_dir / f"samples_{best.name}.png", dpi)))
    if class_counts is not None:
        figures.append(("Class distribution per split",
                        plots.class_distribution(class_counts["class_counts"], fig_dir / "class_distribution.png",
                                                 dpi)))
    return figures


# ------------------------------------------------------------------------------ documents
def render_markdown(tables: list[Table], note: list[str], figures: list[tuple[str, Path]], fig_rel: str) -> str:
    out = ["# Fashion-MNIST: our measurements vs the published claims", "",
           "Generated by `python -m pipeline publish` from the pipeline's outputs; do not edit by hand.", "",
           "## What cannot be reproduced, and why", ""]
    out += [f"- {line}" for line in note]
    for table in tables:
        out += ["", f"## {table.title}", "", markdown_table(table), ""]
        if table.caption:
            out += [f"_{table.caption}_", ""]
    out += ["## Figures", ""]
    for caption, path in figures:
        out += [f"### {caption}", "", f"![{caption}]({fig_rel}/{path.name})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f0f0f0}tbody tr:nth-child(even){background:#fafafa}
.caption{font-size:.8em;color:#555;max-width:1100px}img{max-width:100%;border:1px solid #ddd}
figure{margin:1em 0}figcaption{font-weight:600}"""


def render_html(tables: list[Table], note: list[str], figures: list[tuple[str, Path]]) -> str:
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Fashion-MNIST: ours vs published</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>Fashion-MNIST: our measurements vs the published claims</h1>",
             "<p class='caption'>Generated by <code>python -m pipeline publish</code>; self-contained (figures "
             "embedded).</p>", "<h2>What cannot be reproduced, and why</h2><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in note]
    parts.append("</ul>")
    for table in tables:
        parts += [f"<h2>{html.escape(table.title)}</h2>", html_table(table)]
        if table.caption:
            parts.append(f"<p class='caption'>{html.escape(table.caption)}</p>")
    parts.append("<h2>Figures</h2>")
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                     f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def records_csv(records: list[dict[str, Any]]) -> str:
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
    return buf.getvalue()


# ------------------------------------------------------------------------------ stage core
def hyperparameter_text(value: Any) -> str:
    """A hyperparameter as the report and the model cards print it (lists as a/b/c, floats in %g)."""
    if isinstance(value, (list, tuple)):
        return "/".join(hyperparameter_text(v) for v in value)
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def table_hyperparameters(results: Sequence[ModelResult]) -> Table:
    """The hyperparameters each model was ACTUALLY trained with (its train.json, from params.yaml at train time):
    the registry's descriptions name structure only, so this table is where a changed params.yaml shows."""
    rows = []
    for r in results:
        hp = r.train_meta.get("hyperparams") or {}
        rows.append([r.name, ", ".join(f"{k}={hyperparameter_text(v)}" for k, v in sorted(hp.items())) or "—",
                     ", ".join(str(run.train_meta.get("seed", "—")) for run in r.runs)])
    return Table("hyperparameters", "Hyperparameters used in this run", ["model", "hyperparameters", "seeds"], rows,
                 caption="As recorded by the train stage from params.yaml `models.<name>`; the model descriptions "
                         "give the structure only.")


def table_not_trained(names: Sequence[str]) -> Table | None:
    """Registered models left out of train.models: their published claims, so the gap stays visible."""
    from pipeline.models import registry

    rows = []
    for name in registry.names():
        if name in names:
            continue
        spec = registry.get(name)
        rows.append([name, spec.source, _pct(spec.published.get("accuracy")),
                     str(spec.published.get("accuracy_kind", "—")), _int(spec.published.get("params"))])
    if not rows:
        return None
    return Table("not_trained", "Registered models not trained in this run",
                 ["model", "source", "published %", "published number is", "published params"], rows,
                 caption="These keep their full published recipes in params.yaml `models.<name>`; add a name to "
                         "`train.models` and re-run `dvc repro` to measure it (slow on CPU: README, Time budget).")


def accuracy_summary(results: Sequence[ModelResult]) -> dict[str, dict[str, Any]]:
    """accuracy.json, the DVC metrics file: per model, the test accuracy (%, mean over seeds), its Wilson 95% CI
    and the standard deviation over seeds (null with one seed). Flat and small on purpose: `dvc exp show` and
    `dvc metrics diff` turn each key into a column (`cnn-ours.test_acc`, ...)."""
    summary = {}
    for r in results:
        low, high = r.ci95
        claim = published_accuracy(r)[0]
        summary[r.name] = {
            "test_acc": round(r.accuracy, 4), "ci95_low": round(low, 4), "ci95_high": round(high, 4),
            "seed_std": None if r.accuracy_std is None else round(r.accuracy_std, 4),
            "gap_pp": None if claim is None else round(r.accuracy - claim, 4),
        }
    return summary


def publish(names: Sequence[str], *, metrics_dir: Path, models_dir: Path, out_dir: Path, test_path: Path | None,
            class_counts_path: Path | None, seeds: Sequence[int] = (42,), summary_path: Path | None = None,
            validation_report_path: Path | None = None,
            mcnemar_top: int = 5, alpha: float = 0.05, sample_images: int = 16, dpi: int = 110) -> dict[str, Any]:
    """Read all inputs, then render tables + figures into a temp dir swapped in for out_dir on success, and
    write the accuracy summary (summary_path) last."""
    results = load_results(list(names), Path(metrics_dir), Path(models_dir), list(seeds))
    x_test = None
    if test_path is not None:
        from pipeline.evaluate import load_test_set

        x_test, y_test = load_test_set(Path(test_path))
        if not np.array_equal(y_test, results[0].y_true):
            raise PipelineError(f"{test_path}: labels differ from the ones the models were evaluated on",
                                hint="re-run the evaluate stages (dvc repro)")
    class_counts = io.read_json(class_counts_path) if class_counts_path is not None else None
    if class_counts is not None and "class_counts" not in class_counts:
        raise PipelineError(f"{class_counts_path}: expected a `class_counts` mapping (written by the split stage)")

    records = comparison_records(results)
    mc = mcnemar_records(results, mcnemar_top, alpha)
    tables = [table_ranking(records)]
    sizes = (class_counts or {}).get("sizes", {})
    tables += [t for t in (table_paper_a(results, sizes.get("val")), table_paper_b_classes(results),
                           table_paper_b_dropout(results)) if t is not None]
    if mc:
        tables.append(table_mcnemar(mc, alpha))
    tables.append(table_hyperparameters(results))
    left_out = table_not_trained(names)
    if left_out is not None:
        tables.append(left_out)
    near = None
    if validation_report_path is not None:
        from pipeline.data.validate import near_duplicates_of

        near = near_duplicates_of(io.read_json(validation_report_path))
    note = reproducibility_note(results, mc, sizes.get("train"), near)

    with io.atomic_dir(out_dir) as tmp:
        figures = render_figures(results, tmp / "figures", x_test=x_test, class_counts=class_counts,
                                 sample_images=sample_images, dpi=dpi)
        (tmp / "comparison.md").write_text(render_markdown(tables, note, figures, "figures"), encoding="utf-8")
        (tmp / "comparison.csv").write_text(records_csv(records), encoding="utf-8")
        (tmp / "comparison.html").write_text(render_html(tables, note, figures), encoding="utf-8")
        from pipeline.model_card import write_model_cards

        cards = write_model_cards(results, tmp, class_counts=class_counts, published=published_accuracy)
    summary = accuracy_summary(results)
    if summary_path is not None:
        io.write_json(summary_path, summary)
    return {"summary": summary, "records": records, "mcnemar": mc, "note": note,
            "figures": [p.name for _, p in figures], "model_cards": cards,
            "tables": [t.key for t in tables]}


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="evaluate stage outputs")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="train stage outputs")
    parser.add_argument("--test", type=Path, default=Path("data/processed/test.npz"),
                        help="test images for the correct/misclassified grid")
    parser.add_argument("--class-counts", type=Path, default=Path("data/split/class_counts.json"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--validation-report", type=Path, default=None,
                        help="the data gate's report (data/validation/report.json): the measured near-duplicate "
                             "share for the note; without it the note says it was not measured")
    parser.add_argument("--summary", type=Path, default=Path("accuracy.json"),
                        help="per-model test accuracy, CI and seed spread: the DVC metrics file")


def cli(args) -> None:
    from pipeline.params import PublishParams, TrainParams, build, load_params, section

    raw = load_params(args.params)
    params = section(PublishParams, "publish", raw)
    train = build(TrainParams, raw.get("train", {}), "train")
    summary = publish(train.models, metrics_dir=args.metrics, models_dir=args.models_dir, out_dir=args.out,
                      test_path=args.test, class_counts_path=args.class_counts, seeds=train.seeds,
                      summary_path=args.summary, validation_report_path=args.validation_report,
                      mcnemar_top=params.mcnemar_top,
                      alpha=params.alpha, sample_images=params.sample_images, dpi=params.dpi)
    best = summary["records"][0]
    print(f"publish: {len(summary['records'])} models x {len(train.seeds)} seed(s), {len(summary['figures'])} figures "
          f"-> {args.out}/, {args.summary}; best "
          f"{best['model']} {best['test_accuracy_pct']:.2f}%", file=sys.stderr)
