"""The publish stage itself: read every input, build tables, note and figures, and swap the rendered report in
for reports/ in one step (pipeline.io.atomic_dir), so a failure never leaves a half-updated report; then write
accuracy.json, the DVC metrics file. Also the stage's CLI (`python -m pipeline publish`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import io
from pipeline.data.convert import load_test_set
from pipeline.data.validate.report import near_duplicates_of
from pipeline.errors import PipelineError
from pipeline.params import PublishParams, TrainParams, build, load_params, section
from pipeline.publish.figures import render_figures
from pipeline.publish.model_card import write_model_cards
from pipeline.publish.narrative import reproducibility_note
from pipeline.publish.render import records_csv, render_html, render_markdown
from pipeline.publish.results import load_results
from pipeline.publish.tables import (accuracy_summary, comparison_records, mcnemar_records, table_hyperparameters,
                                     table_mcnemar, table_not_trained, table_paper_a, table_paper_b_classes,
                                     table_paper_b_dropout, table_ranking)


def publish(names: Sequence[str], *, metrics_dir: Path, models_dir: Path, out_dir: Path, test_path: Path | None,
            class_counts_path: Path | None, seeds: Sequence[int], summary_path: Path | None = None,
            validation_report_path: Path | None = None,
            mcnemar_top: int, alpha: float, sample_images: int, dpi: int) -> dict[str, Any]:
    """Read all inputs, then render tables + figures into a temp dir swapped in for out_dir on success, and
    write the accuracy summary (summary_path) last, so it never describes a report that was not written.

    seeds is params.yaml `train.seeds`; mcnemar_top, alpha, sample_images and dpi are `publish` (their home)."""
    results = load_results(list(names), Path(metrics_dir), Path(models_dir), list(seeds))
    x_test = None
    if test_path is not None:

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

        near = near_duplicates_of(io.read_json(validation_report_path))
    note = reproducibility_note(results, mc, sizes.get("train"), near)

    with io.atomic_dir(out_dir) as tmp:
        figures = render_figures(results, tmp / "figures", x_test=x_test, class_counts=class_counts,
                                 sample_images=sample_images, dpi=dpi)
        (tmp / "comparison.md").write_text(render_markdown(tables, note, figures, "figures"), encoding="utf-8")
        (tmp / "comparison.csv").write_text(records_csv(records), encoding="utf-8")
        (tmp / "comparison.html").write_text(render_html(tables, note, figures), encoding="utf-8")
        cards = write_model_cards(results, tmp, class_counts=class_counts)
    summary = accuracy_summary(results)
    if summary_path is not None:
        io.write_json(summary_path, summary)
    return {"summary": summary, "records": records, "mcnemar": mc, "note": note,
            "figures": [p.name for _, p in figures], "model_cards": cards,
            "tables": [t.key for t in tables]}


def add_cli(parser) -> None:
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate stage outputs")
    parser.add_argument("--models-dir", type=Path, required=True, help="train stage outputs")
    parser.add_argument("--test", type=Path, required=True,
                        help="test images for the correct/misclassified grid")
    parser.add_argument("--class-counts", type=Path, required=True, help="the split stage's class_counts.json")
    parser.add_argument("--out", type=Path, required=True, help="reports directory (tables, figures, model cards)")
    parser.add_argument("--validation-report", type=Path, default=None,
                        help="the data gate's report (data/validation/report.json): the measured near-duplicate "
                             "share for the note; without it the note says it was not measured")
    parser.add_argument("--summary", type=Path, required=True,
                        help="per-model test accuracy, CI and seed spread: the DVC metrics file")


def cli(args) -> None:
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
