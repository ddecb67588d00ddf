"""convert, images and split stages on real data slices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import io
from pipeline.data.convert import convert, table_to_arrays
from pipeline.data.fetch import to_kaggle_table
from pipeline.data.images import export_png_tree
from pipeline.data.split import class_counts, stratified_split
from pipeline.errors import PipelineError
from pipeline.schema import CLASS_NAMES, CLASS_SLUGS


def test_table_to_arrays_round_trips_real_images(fmnist):
    x, y = fmnist["train"]
    images, labels = table_to_arrays(to_kaggle_table(x[:500], y[:500]))
    assert images.dtype == np.uint8 and images.shape == (500, 28, 28)
    np.testing.assert_array_equal(images, x[:500])
    np.testing.assert_array_equal(labels, y[:500])


def test_convert_refuses_data_that_failed_validation(tmp_path, fmnist):
    io.write_json(tmp_path / "report.json", {"success": False})
    with pytest.raises(PipelineError, match="did not pass"):
        convert(tmp_path, tmp_path / "report.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stratified_split_sizes_balance_and_seed(fmnist):
    _, y = fmnist["train"]
    train_idx, val_idx = stratified_split(y, 48000, 12000, seed=42)
    assert len(train_idx) == 48000 and len(val_idx) == 12000
    assert not set(train_idx) & set(val_idx)
    # Stratified: exactly 4,800 / 1,200 of each class (the official train set has 6,000 per class).
    assert set(np.bincount(y[train_idx], minlength=10)) == {4800}
    assert set(np.bincount(y[val_idx], minlength=10)) == {1200}
    again, _ = stratified_split(y, 48000, 12000, seed=42)
    other, _ = stratified_split(y, 48000, 12000, seed=7)
    np.testing.assert_array_equal(train_idx, again)
    assert not np.array_equal(train_idx, other)


def test_split_rejects_sizes_larger_than_the_data(fmnist):
    _, y = fmnist["train"]
    with pytest.raises(PipelineError, match="exceed"):
        stratified_split(y[:100], 80, 30, seed=0)


def test_class_counts_names_every_class(fmnist):
    _, y = fmnist["test"]
    counts = class_counts(y)
    assert list(counts) == list(CLASS_NAMES)
    assert set(counts.values()) == {1000}


def test_png_tree_layout_and_pixels(tmp_path, fmnist):
    from PIL import Image

    x, y = fmnist["test"]
    n = export_png_tree({"test": (x[:40], y[:40])}, tmp_path, workers=2)
    assert n == 40
    for idx in (0, 17, 39):
        png = tmp_path / "test" / CLASS_SLUGS[y[idx]] / f"{idx}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(png)), x[idx])
    assert sum(1 for _ in tmp_path.rglob("*.png")) == 40


def test_split_cli_writes_arrays_and_class_counts(tmp_path, fmnist):
    from tests.conftest import run_cli

    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    io.save_arrays(tmp_path / "processed" / "train.npz", x=x[:1000], y=y[:1000])
    io.save_arrays(tmp_path / "processed" / "test.npz", x=xt[:200], y=yt[:200])
    (tmp_path / "params.yaml").write_text("split:\n  train_size: 800\n  val_size: 200\n  seed: 3\n")
    proc = run_cli("split", "--processed", "processed", "--out", "split", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    train, val = io.load_arrays(tmp_path / "split/train.npz"), io.load_arrays(tmp_path / "split/val.npz")
    assert len(train["y"]) == 800 and len(val["y"]) == 200
    np.testing.assert_array_equal(train["x"], x[:1000][train["index"]])
    summary = json.loads((tmp_path / "split/class_counts.json").read_text())
    assert summary["sizes"] == {"train": 800, "val": 200, "test": 200}
    assert sum(summary["class_counts"]["val"].values()) == 200
