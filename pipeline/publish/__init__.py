"""publish stage: comparison tables (ours vs published) and figures, written to reports/ as ONE atomic swap.

    python -m pipeline publish --metrics metrics --models-dir models --test data/processed/test.npz \
        --class-counts data/split/class_counts.json --out reports --summary accuracy.json

Reads only earlier stages' outputs for every model in `train.models` and seed in `train.seeds`
(metrics/<name>/seed-<seed>.json + .predictions.npz, models/<name>/seed-<seed>/train.json + history.csv),
data/split/class_counts.json, the test images for the sample grid, and the published claims in
pipeline.models.registry. Writes reports/comparison.{md,csv,html} and reports/figures/*.png (the HTML is
self-contained, figures embedded as base64 PNG), a model card per model in reports/model-cards/<model>.md
(pipeline.publish.model_card), then accuracy.json, the DVC metrics file. Everything is
rendered into a temporary directory and swapped in for reports/ only on success, so a failure never leaves a
half-updated report.

Every model in `train.models` must have been evaluated with every seed: a missing run is an error naming it.
With several seeds, accuracies are means over seeds with their standard deviation, and a published claim
"holds" when it lies inside the Wilson CI widened by the seed spread (results.ModelResult.verdict_interval).
Not about: computing metrics (pipeline.training.evaluate) or drawing details (pipeline.publish.plots).

One module per job: results (load and check the runs), tables, narrative (the reproducibility note), figures,
render (Markdown/HTML/CSV) and stage (the stage and its CLI). This package re-exports what other code uses.
"""

from pipeline.publish.figures import render_figures
from pipeline.publish.narrative import (BEST_PUBLISHED_TEST_ACCURACY, LITERATURE_NEAR_DUPLICATE_SHARE,
                                        near_duplicate_sentence, reproducibility_note)
from pipeline.publish.render import html_table, markdown_table, records_csv, render_html, render_markdown
from pipeline.publish.results import (ModelResult, SeedRun, claim_is_test_accuracy, load_results, published_accuracy,
                                      ranked)
from pipeline.publish.stage import add_cli, cli, publish
from pipeline.publish.tables import (Table, accuracy_summary, comparison_records, hyperparameter_text, mcnemar_records,
                                     table_hyperparameters, table_mcnemar, table_not_trained, table_paper_a,
                                     table_paper_b_classes, table_paper_b_dropout, table_ranking)

__all__ = [
    "BEST_PUBLISHED_TEST_ACCURACY", "LITERATURE_NEAR_DUPLICATE_SHARE", "ModelResult", "SeedRun", "Table",
    "accuracy_summary", "add_cli", "claim_is_test_accuracy", "cli", "comparison_records", "html_table",
    "hyperparameter_text", "load_results", "markdown_table", "mcnemar_records", "near_duplicate_sentence",
    "publish", "published_accuracy", "ranked", "records_csv", "render_figures", "render_html", "render_markdown",
    "reproducibility_note", "table_hyperparameters", "table_mcnemar", "table_not_trained", "table_paper_a",
    "table_paper_b_classes", "table_paper_b_dropout", "table_ranking",
]
