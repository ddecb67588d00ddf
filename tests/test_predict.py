"""predict: the photo -> Fashion-MNIST conversion on real test images rendered as photos, and the command on
images, a directory, a Kaggle CSV and an NPZ, with tiny real trained models (tests/_trained.py)."""

from __future__ import annotations

import csv
import io as _stdio
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import io
from pipeline.data.fetch import to_kaggle_table, write_kaggle_csv
from pipeline.serving.imaging import to_fashion_mnist, to_gray
from pipeline.models import registry
from pipeline.serving.predict import Item, predict_items, read_picture, top_k
from pipeline.schema import CLASS_NAMES
from tests._trained import SEED
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def ws(trained) -> Path:
    return trained


def as_photo(image: np.ndarray, scale: int = 4, tint=(1.0, 0.9, 0.78), invert: bool = True) -> np.ndarray:
    """An official 28x28 image as a user's photo: enlarged, dark item on a light tinted backdrop, off-centre."""
    big = np.asarray(Image.fromarray(image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC))
    big = 255 - big if invert else big
    canvas = np.full((28 * scale + 40, 28 * scale + 24), 255 if invert else 0, dtype=np.uint8)
    canvas[10:10 + 28 * scale, 17:17 + 28 * scale] = big
    return np.clip(canvas[..., None] * np.asarray(tint), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = _stdio.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


# ------------------------------------------------------------------------------ conversion (pure)
def test_official_images_rendered_as_photos_are_predicted_as_the_originals(ws, fmnist):
    x = fmnist["test"][0][:200]
    predictor = registry.load_predictor(ws / "models" / "cnn-dropout-1" / f"seed-{SEED}")
    items = [read_picture(f"{i}.png", _stdio.BytesIO(png_bytes(as_photo(img)))) for i, img in enumerate(x)]
    assert all(item.inverted for item in items), "a light border means a light background: inverted"
    seen = np.stack([item.image for item in items])
    assert seen.shape == (200, 28, 28) and seen.dtype == np.uint8
    # The picture comes back close to the original: same item, light on black, filling the frame.
    again = np.stack([to_fashion_mnist(img).image for img in x])
    assert np.abs(seen.astype(float) - again).mean() < 15
    assert np.abs(seen.astype(float) - x).mean() < 20
    agree = np.mean(predictor(seen).argmax(1) == predictor(x).argmax(1))
    assert agree >= 0.85, f"only {agree:.0%} of the rendered photos got the original's prediction"


def test_dark_background_is_not_inverted_and_jpeg_colour_works(fmnist):
    x = fmnist["test"][0][:20]
    differences = []
    for img in x:
        photo = as_photo(img, scale=3, tint=(0.7, 1.0, 0.9), invert=False)   # light item on a dark backdrop
        item = read_picture("p.jpg", _stdio.BytesIO(png_bytes(photo, "JPEG")))
        assert item.error is None and item.inverted is False
        differences.append(np.abs(item.image.astype(float) - to_fashion_mnist(img).image).mean())
    assert np.mean(differences) < 20   # enlarging and shrinking back blurs; the item stays where it was


def test_sixteen_bit_grey_png_is_scaled_not_clipped(fmnist):
    img = fmnist["test"][0][5]
    buf = _stdio.BytesIO()
    Image.fromarray(img.astype(np.uint16) * 257).save(buf, format="PNG")     # 16-bit grey, same picture
    item = read_picture("deep.png", _stdio.BytesIO(buf.getvalue()))
    assert item.error is None and np.abs(item.image.astype(int) - to_fashion_mnist(img).image).max() <= 1


def test_conversion_keeps_aspect_ratio_and_centres_the_item():
    wide = np.full((60, 200), 255, dtype=np.uint8)
    wide[20:40, 50:150] = 0                       # a dark 20x100 bar on white
    conv = to_fashion_mnist(wide)
    assert conv.inverted and conv.box == (20, 50, 40, 150)
    rows = np.flatnonzero(conv.image.max(axis=1) > 128)
    cols = np.flatnonzero(conv.image.max(axis=0) > 128)
    assert (cols[0], cols[-1]) == (0, 27)          # the longer side fills the frame
    assert len(rows) in (5, 6) and abs((rows[0] + rows[-1]) / 2 - 13.5) <= 0.5   # 100:20 kept, centred


def test_blank_or_malformed_images_are_refused():
    with pytest.raises(ValueError, match="blank"):
        to_fashion_mnist(np.full((50, 50, 3), 200, dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((4, 4, 5)))


def test_top_k_and_batched_prediction():
    p = np.array([0.05, 0.5, 0.0, 0.2, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0], dtype=np.float32)
    assert top_k(p) == [("Trouser", 0.5), ("Shirt", 0.25), ("Dress", pytest.approx(0.2))]
    calls = []

    def predictor(x):
        calls.append(len(x))
        return np.tile(p, (len(x), 1))

    items = [Item(str(i), image=np.zeros((28, 28), np.uint8)) for i in range(20)] + [Item("bad", error="broken")]
    preds = predict_items(predictor, items, batch_size=8)
    assert calls == [8, 8, 4] and preds[-1].probs is None and preds[0].probs[1] == pytest.approx(0.5)


# ------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def inputs(ws, fmnist, tmp_path_factory) -> dict[str, Path]:
    """A directory of 12 photos (PNG and JPEG) and a corrupt file, a 30-row Kaggle CSV, a 40-row NPZ."""
    d = tmp_path_factory.mktemp("inputs")
    (xt, yt) = fmnist["test"]
    photos = d / "photos"
    photos.mkdir()
    for i in range(12):
        fmt = "JPEG" if i % 3 == 0 else "PNG"
        (photos / f"item-{i:02d}.{'jpg' if fmt == 'JPEG' else 'png'}").write_bytes(png_bytes(as_photo(xt[i]), fmt))
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    (photos / "notes.txt").write_text("ignored: not an image")
    write_kaggle_csv(to_kaggle_table(xt[100:130], yt[100:130]), d / "slice.csv")
    io.save_arrays(d / "slice.npz", x=xt[200:240], y=yt[200:240])
    return {"dir": photos, "csv": d / "slice.csv", "npz": d / "slice.npz", "root": d}


def test_predict_a_directory_a_csv_and_an_npz_and_name_the_unreadable_file(ws, inputs, fmnist, tmp_path):
    out = tmp_path / "pred.json"
    proc = run_cli("predict", "--model", "cnn-dropout-1", str(inputs["dir"]), str(inputs["csv"]), str(inputs["npz"]),
                   "--out", str(out), cwd=ws)
    assert proc.returncode == 2, proc.stderr
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    assert "the other inputs were predicted" in proc.stderr
    doc = json.loads(out.read_text())
    assert doc["model"] == "cnn-dropout-1" and doc["seed"] == SEED
    rows = doc["predictions"]
    assert len(rows) == 13 + 30 + 40
    broken = [r for r in rows if r["input"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["predicted"] is None and "not an image" in broken[0]["error"]
    photos = [r for r in rows if "/photos/item-" in r["input"]]
    assert len(photos) == 12 and all(r["inverted"] is True and r["error"] is None for r in photos)
    for r in rows:
        if r["error"] is None:
            probs = [t["probability"] for t in r["top3"]]
            assert r["predicted"] == r["top3"][0]["class"] and probs == sorted(probs, reverse=True)
            assert r["predicted"] in CLASS_NAMES and 0 < r["probability"] <= 1
    # NPZ rows are used as they are: the same probabilities as the registry's loader on the arrays.
    xt, yt = fmnist["test"]
    direct = registry.load_predictor(ws / "models" / "cnn-dropout-1" / f"seed-{SEED}")(xt[200:240])
    npz_rows = [r for r in rows if "slice.npz[" in r["input"]]
    assert [r["input"].rsplit("[", 1)[1] for r in npz_rows[:2]] == ["0]", "1]"]
    assert [r["predicted"] for r in npz_rows] == [CLASS_NAMES[i] for i in direct.argmax(1)]
    assert np.allclose([r["probability"] for r in npz_rows], direct.max(1), atol=1e-6)
    assert [r["label"] for r in npz_rows] == [CLASS_NAMES[i] for i in yt[200:240]]
    assert all(r["inverted"] is None for r in npz_rows)


def test_predict_csv_output_with_a_scikit_learn_model(ws, inputs, fmnist):
    proc = run_cli("predict", "--model", "gaussian-nb", str(inputs["csv"]), cwd=ws)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(_stdio.StringIO(proc.stdout)))
    assert list(rows[0]) == ["input", "predicted", "probability", "top2", "top2_probability", "top3",
                             "top3_probability", "inverted", "label", "error"]
    xt, yt = fmnist["test"]
    direct = registry.load_predictor(ws / "models" / "gaussian-nb" / f"seed-{SEED}")(xt[100:130])
    assert [r["predicted"] for r in rows] == [CLASS_NAMES[i] for i in direct.argmax(1)]
    assert [r["label"] for r in rows] == [CLASS_NAMES[i] for i in yt[100:130]]


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "unknown model `no-such-model`"),
    (["--model", "svc"], "no trained model `svc` (seed 42)"),
    (["--model", "cnn-dropout-1", "--seed", "7"], "no trained model `cnn-dropout-1` (seed 7)"),
])
def test_predict_model_errors_are_clear(ws, inputs, args, message):
    proc = run_cli("predict", *args, str(inputs["csv"]), cwd=ws)
    assert proc.returncode == 2 and message in proc.stderr and "how to fix" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_missing_file_is_named_and_the_rest_predicted(ws, inputs):
    proc = run_cli("predict", "--model", "gaussian-nb", str(inputs["root"] / "nope.png"), str(inputs["npz"]), cwd=ws)
    assert proc.returncode == 2 and "nope.png: file not found" in proc.stderr
    rows = list(csv.DictReader(_stdio.StringIO(proc.stdout)))
    assert len(rows) == 41 and rows[0]["error"] == "file not found" and all(r["predicted"] for r in rows[1:])
