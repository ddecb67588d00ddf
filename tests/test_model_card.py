"""Model cards: publish writes reports/model-cards/<model>.md for every trained model, from the real evaluation
outputs of tiny real models (tests/_trained.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline import io
from pipeline.metrics import confusion_matrix
from pipeline.publish.model_card import confused_pairs
from pipeline.schema import CLASS_NAMES
from tests._trained import MODELS, SEED


@pytest.fixture(scope="module")
def cards(trained) -> dict:
    """publish's own run over the tiny trained models (tests/_trained.py writes <root>/reports with it)."""
    ws = trained
    return {"ws": ws, "out": ws / "reports"}


def test_every_trained_model_gets_a_card(cards):
    assert sorted(p.name for p in (cards["out"] / "model-cards").iterdir()) == sorted(f"{m}.md" for m in MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_card_states_data_recipe_accuracy_per_class_and_weaknesses(cards, name):
    ws = cards["ws"]
    text = (cards["out"] / "model-cards" / f"{name}.md").read_text()
    metrics = io.read_json(ws / "metrics" / name / f"seed-{SEED}.json")
    test = metrics["test"]
    for heading in ("## Data", "## Recipe", "## Test accuracy", "## Per class", "## What it is not good at"):
        assert heading in text
    assert "600 training and 200 validation images" in text
    assert (f"**{100 * test['accuracy']:.2f}%** on 300 official test images; 95% CI "
            f"{100 * test['accuracy_ci95_low']:.2f}-{100 * test['accuracy_ci95_high']:.2f}%") in text
    train_meta = io.read_json(ws / "models" / name / f"seed-{SEED}" / "train.json")
    for key in train_meta["hyperparams"]:
        assert f"`{key}=" in text
    for cls in CLASS_NAMES:
        row = test["per_class"][cls]
        cells = f"{row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']:,}"
        assert f"| {cls} | {cells} |" in text
    # the most confused pair is the largest off-diagonal cell of the model's own test confusion matrix
    pred = io.load_arrays(ws / "metrics" / name / f"seed-{SEED}.predictions.npz")
    cm = confusion_matrix(pred["y_true"], pred["y_pred"])
    off = cm - np.diag(np.diag(cm))
    a, p = np.unravel_index(np.argmax(off), off.shape)
    table = text[text.index("| true class |"):]
    first = re.findall(r"^\| ([^|]+) \| ([^|]+) \| (\d+) \|", table, re.M)[0]
    assert (first[0], first[1], int(first[2])) == (CLASS_NAMES[a], CLASS_NAMES[p], int(off[a, p]))
    assert "[the comparison report](../comparison.md)" in text


def test_confused_pairs_from_a_hand_made_matrix():
    cm = np.diag([90] * 10)
    cm[6, 0], cm[0, 6], cm[4, 2], cm[2, 4] = 12, 7, 9, 9
    pairs = confused_pairs([cm, cm], top=3)
    assert [(p["actual"], p["predicted"]) for p in pairs] == [("Shirt", "T-shirt/top"), ("Pullover", "Coat"),
                                                              ("Coat", "Pullover")]
    assert pairs[0]["count"] == 12 and pairs[0]["share"] == pytest.approx(12 / 102)
