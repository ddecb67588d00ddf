"""Static matplotlib figures (PNG, Agg backend) for the published report; used only by pipeline.publish.

Every function takes plain data (arrays, dicts, frames), writes one PNG and returns its path. Nothing
here reads pipeline outputs or decides what to plot: publish does. `dpi` has no default: it is params.yaml
`publish.dpi`. PNG output is deterministic (no timestamp metadata), so an unchanged input gives
byte-identical figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.schema import CLASS_NAMES

CORRECT_COLOUR = "#1a9850"
WRONG_COLOUR = "#d73027"
_METADATA = {"Software": None}  # no version string: figures depend on data only


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
                         "figure.autolayout": False})
    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=_METADATA)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def training_curves(name: str, history, path: Path, dpi: int) -> Path:
    """Train vs validation accuracy and loss per epoch for one model (history: DataFrame from history.csv)."""
    plt = _plt()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = history["epoch"].to_numpy()
    for ax, key, label in ((ax_acc, "accuracy", "accuracy"), (ax_loss, "loss", "loss")):
        ax.plot(epochs, history[key].to_numpy(), marker="o", ms=3, label=f"train {label}")
        ax.plot(epochs, history[f"val_{key}"].to_numpy(), marker="s", ms=3, label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    ax_acc.set_title(f"{name}: accuracy per epoch")
    ax_loss.set_title(f"{name}: loss per epoch")
    fig.suptitle("train metrics: Keras running averages over each epoch, dropout/augmentation active",
                 fontsize=8, y=1.0, color="#555555")
    fig.tight_layout()
    return _save(fig, path, dpi)


def epoch_times(histories: Mapping[str, Any], path: Path, dpi: int) -> Path:
    """Wall time per epoch, one line per CNN."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, history in histories.items():
        ax.plot(history["epoch"].to_numpy(), history["epoch_time_s"].to_numpy(), marker="o", ms=3, label=name)
    ax.set_title("Training time per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds per epoch")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path, dpi)


def confusion_heatmap(name: str, cm: np.ndarray, path: Path, dpi: int,
                      class_names: Sequence[str] = CLASS_NAMES) -> Path:
    """Counts heatmap, rows = actual, columns = predicted, each cell annotated."""
    plt = _plt()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    image = ax.imshow(cm, cmap="Blues")
    ax.grid(False)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    accuracy = np.trace(cm) / cm.sum() if cm.sum() else float("nan")
    ax.set_title(f"{name}: confusion matrix on the test set (accuracy {accuracy:.2%})")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    return _save(fig, path, dpi)


def sample_grid(name: str, x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, indices_ok: Sequence[int],
                indices_wrong: Sequence[int], path: Path, dpi: int, per_row: int = 8) -> Path:
    """Correctly classified test images (green) above misclassified ones (red), titled true -> predicted."""
    plt = _plt()
    groups = [("correct", list(indices_ok), CORRECT_COLOUR), ("misclassified", list(indices_wrong), WRONG_COLOUR)]
    rows_per_group = [max(1, -(-len(idx) // per_row)) for _, idx, _ in groups]
    n_rows = sum(rows_per_group)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(per_row * 1.35, n_rows * 1.6), squeeze=False)
    row = 0
    for (label, idx, colour), n_group_rows in zip(groups, rows_per_group):
        for k in range(n_group_rows * per_row):
            ax = axes[row + k // per_row][k % per_row]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if k >= len(idx):
                ax.axis("off")
                continue
            i = idx[k]
            ax.imshow(x[i], cmap="gray_r", vmin=0, vmax=255)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            ax.set_title(f"{CLASS_NAMES[int(y_true[i])]}\n-> {CLASS_NAMES[int(y_pred[i])]}", fontsize=7,
                         color=colour)
        axes[row][0].set_ylabel(label, color=colour, fontsize=9)
        row += n_group_rows
    fig.suptitle(f"{name}: test images, correct (green) and misclassified (red); title = actual -> predicted",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


def class_distribution(counts: Mapping[str, Mapping[str, int]], path: Path, dpi: int,
                       class_names: Sequence[str] = CLASS_NAMES) -> Path:
    """Grouped bars: images per class in each split (train / val / test)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    splits = list(counts)
    width = 0.8 / max(1, len(splits))
    positions = np.arange(len(class_names))
    for k, split in enumerate(splits):
        values = [counts[split].get(c, 0) for c in class_names]
        ax.bar(positions + (k - (len(splits) - 1) / 2) * width, values, width, label=f"{split} ({sum(values):,})")
    ax.set_xticks(positions, labels=class_names, rotation=30, ha="right")
    ax.set_title("Class distribution per split")
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.legend()
    return _save(fig, path, dpi)


def accuracy_comparison(rows: Sequence[Mapping[str, Any]], path: Path, dpi: int,
                        n_test: int | None = None) -> Path:
    """Horizontal bars of measured test accuracy (95% CI whiskers) with published claims marked.

    rows: dicts with model, accuracy, ci_low, ci_high (percent) and published, published_is_test (or None).
    """
    plt = _plt()
    rows = list(rows)[::-1]  # best at the top
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(rows) + 1.6))
    y = np.arange(len(rows))
    acc = np.array([r["accuracy"] for r in rows])
    err = np.array([[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]])
    ax.barh(y, acc, xerr=err, color="#4575b4", alpha=0.85, capsize=2,
            label="ours: test accuracy (95% CI; widened by the seed spread)")
    labelled = set()
    for yi, r in zip(y, rows):
        if r.get("published") is None:
            continue
        is_test = bool(r.get("published_is_test"))
        label = "published: test accuracy" if is_test else "published: validation / other"
        ax.plot(r["published"], yi, marker="D" if is_test else "X", ms=8, linestyle="none",
                color="#fdae61" if is_test else WRONG_COLOUR, markeredgecolor="black",
                label=None if label in labelled else label)
        labelled.add(label)
    ax.set_yticks(y, labels=[r["model"] for r in rows])
    low = min([*acc, *[r["published"] for r in rows if r.get("published") is not None]])
    left = max(0.0, math.floor(low - 5))
    ax.set_xlim(left, 100)
    for yi, a in zip(y, acc):  # value inside the bar, clear of the CI whiskers and claim markers
        ax.text(left + 0.4, yi, f"{a:.2f}", va="center", ha="left", fontsize=7, color="white", fontweight="bold")
    n_text = f"{n_test:,}-image " if n_test else ""
    ax.set_title(f"Test accuracy on the official {n_text}test set vs published claims")
    ax.set_xlabel("accuracy (%)")
    ax.set_ylabel("model")
    # Below the axes: inside, it hid the claim markers of the lowest rows.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
    return _save(fig, path, dpi)
