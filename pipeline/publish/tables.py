"""The report's tables, as data (Table: headers + rows of text) that pipeline.publish.render turns into
Markdown and HTML, and the machine-readable records behind them (the CSV, accuracy.json, McNemar tests).

Pure: ModelResults in, tables out. Every number printed here was measured by an earlier stage or is quoted from
the registry; nothing is computed that the evaluate stage already stored, except what needs several models at
once (rankings, paired McNemar tests) or the per-class figures of paper B's table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

from pipeline.metrics import holm_adjust, mcnemar, per_class_report
from pipeline.models import registry
from pipeline.models.registry import PAPER_A, PAPER_B
from pipeline.publish.results import ModelResult, claim_is_test_accuracy, last_epoch, published_accuracy, ranked
from pipeline.schema import CLASS_NAMES


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
            "claim_holds": r.claim_verdict,
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
        if r.spec.source != PAPER_A or "tf1_train_loss" not in pub:
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
    ours = {name: per_class_report(r.y_true, r.y_pred) for name, r in by_name.items() if r.spec.source == PAPER_B}
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


def table_paper_b_dropout(results: Sequence[ModelResult]) -> Table | None:
    rows = []
    for r in results:
        if r.spec.source != PAPER_B:
            continue
        pub = r.published
        pub_train = pub.get("train_accuracy")
        pub_val = pub.get("val_accuracy", pub.get("accuracy") if "validation" in str(pub.get("accuracy_kind", ""))
                          else None)
        pub_test = pub.get("accuracy") if claim_is_test_accuracy(str(pub.get("accuracy_kind", ""))) else None
        last = last_epoch(r.history)
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


