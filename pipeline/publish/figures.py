"""The report's figures: which ones to draw, from which results, in report order (pipeline.publish.plots draws them).

One accuracy chart of every model with the published claims marked, per-epoch curves and epoch times of the
CNNs, confusion matrices of the best model and of the papers' models, the best model's correct and
misclassified test images, and the class distribution per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.publish import plots
from pipeline.metrics import confusion_matrix
from pipeline.models.registry import PAPER_A, PAPER_B
from pipeline.publish.results import ModelResult, claim_is_test_accuracy, published_accuracy, ranked


def render_figures(results: Sequence[ModelResult], fig_dir: Path, *, x_test: np.ndarray | None,
                   class_counts: dict[str, Any] | None, sample_images: int, dpi: int) -> list[tuple[str, Path]]:
    """Draw every figure into fig_dir; return [(caption, path)] in report order."""

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
    confusion_models = [best] + [r for r in results if r.spec.source in (PAPER_A, PAPER_B) and r is not best]
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
