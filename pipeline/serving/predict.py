"""predict: apply a trained model to your own images, CSVs or NPZ files.

    python -m pipeline predict --model cnn-ours photo.jpg shoes/ more.csv [--seed 42] [--out predictions.csv]

INPUT may be image files (PNG, JPEG, BMP, GIF, WebP, TIFF; any size, grey or colour), a directory of them
(searched recursively), a Kaggle-layout CSV (`label,pixel1..pixel784`) or an NPZ holding (N,28,28) or
(N,784) uint8 images (`x`, as the pipeline writes them, or the file's only array). Pictures are converted the
way Fashion-MNIST was made (pipeline.serving.imaging: light item on black, 28x28, centred; inverted when their border
is light, and the output says so); CSV/NPZ rows are Fashion-MNIST images already and are used as they are.

Output (CSV, or JSON with --format json or an --out ending in .json; stdout without --out): one row per image
with the input, the predicted class, its probability, the top 3 and whether the picture was inverted; a CSV
or NPZ with labels adds the true label. An unreadable input is reported on stderr by name, gets a row with
its error, and the others are still predicted; the command then exits 2.

The model is loaded by the registry's one safe loader (pipeline.models.registry.load_predictor), Keras and
scikit-learn alike. Models without predict_proba give one-hot votes: their "probability" is 1.0.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pipeline import io
from pipeline.data.convert import table_to_arrays
from pipeline.data.ingest import read_kaggle_csv
from pipeline.errors import PipelineError
from pipeline.metrics import predict_in_batches
from pipeline.models import registry
from pipeline.params import load_params, section
from pipeline.progress import BatchProgress
from pipeline.runs import model_dir_for, seed_of
from pipeline.schema import CLASS_NAMES, IMAGE_SIDE, N_PIXELS
from pipeline.serving.imaging import to_fashion_mnist

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ARRAY_SUFFIXES = frozenset({".csv", ".npz"})
TOP_K = 3


@dataclass
class Item:
    """One image to predict (image set), or one input that could not be read (error set)."""
    input: str
    image: np.ndarray | None = None      # uint8 (28, 28)
    inverted: bool | None = None         # None: a CSV/NPZ row, used as it is
    label: int | None = None
    error: str | None = None


@dataclass
class Prediction:
    item: Item
    probs: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ pure core
def top_k(probs: np.ndarray, k: int = TOP_K) -> list[tuple[str, float]]:
    """The k most probable classes of one probability row, most probable first (ties: lower label first)."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")[:k]
    return [(CLASS_NAMES[i], float(probs[i])) for i in order]


def record(pred: Prediction) -> dict[str, Any]:
    """One output row as a mapping (JSON shape)."""
    item = pred.item
    rec: dict[str, Any] = {"input": item.input}
    if pred.probs is None:
        rec.update(predicted=None, probability=None, top3=[], inverted=item.inverted, error=item.error)
    else:
        top = top_k(pred.probs)
        rec.update(predicted=top[0][0], probability=round(top[0][1], 6),
                   top3=[{"class": c, "probability": round(p, 6)} for c, p in top],
                   inverted=item.inverted, error=None)
    if item.label is not None:
        rec["label"] = CLASS_NAMES[item.label]
    return rec


def render_json(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "predictions": list(records)}, indent=2) + "\n"


def render_csv(records: Sequence[dict[str, Any]]) -> str:
    with_label = any("label" in r for r in records)
    headers = ["input", "predicted", "probability"]
    for i in range(2, TOP_K + 1):
        headers += [f"top{i}", f"top{i}_probability"]
    headers += ["inverted"] + (["label"] if with_label else []) + ["error"]
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    for r in records:
        row = [r["input"], r["predicted"] or "", "" if r["probability"] is None else f"{r['probability']:.6f}"]
        for i in range(1, TOP_K):
            if i < len(r["top3"]):
                row += [r["top3"][i]["class"], f"{r['top3'][i]['probability']:.6f}"]
            else:
                row += ["", ""]
        row.append({True: "yes", False: "no", None: ""}[r["inverted"]])
        if with_label:
            row.append(r.get("label", ""))
        row.append(r["error"] or "")
        writer.writerow(row)
    return buf.getvalue()


def predict_items(predictor: Callable[[np.ndarray], np.ndarray], items: Sequence[Item], *, batch_size: int,
                  label: str | None = None) -> list[Prediction]:
    """Predict every readable item in batches (progress under `label` on long work); errors pass through."""

    readable = [i for i, item in enumerate(items) if item.image is not None]
    preds = [Prediction(item) for item in items]
    if readable:
        x = np.stack([items[i].image for i in readable])
        probs, _ = predict_in_batches(predictor, x, batch_size, label=label)
        for i, p in zip(readable, probs):
            preds[i].probs = p
    return preds


# ------------------------------------------------------------------------------ reading inputs (I/O)
def read_picture(path: Path | str, source: Any = None) -> Item:
    """An image file (or an open binary file `source`, named `path`) -> Item with its Fashion-MNIST-style
    28x28 conversion, or an Item naming the problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = str(path)
    try:
        with Image.open(path if source is None else source) as im:
            im = ImageOps.exif_transpose(im)       # phone photos: honour the camera's orientation tag
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):   # 16-bit grey: scale to 0..255, not clip
                array = np.asarray(im, dtype=np.float64) * (255.0 / 65535.0)
            else:
                if im.mode not in ("L", "RGB", "RGBA", "LA"):
                    im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
                array = np.asarray(im)
    except FileNotFoundError:
        return Item(name, error="file not found")
    except UnidentifiedImageError:
        return Item(name, error="not an image Pillow can read (PNG, JPEG, BMP, GIF, WebP, TIFF)")
    except Image.DecompressionBombError as exc:
        return Item(name, error=f"image too large ({exc})")
    except (OSError, ValueError, SyntaxError) as exc:
        return Item(name, error=f"unreadable image ({exc})")
    try:
        conv = to_fashion_mnist(array)
    except ValueError as exc:
        return Item(name, error=str(exc))
    return Item(name, image=conv.image, inverted=conv.inverted)


def _rows(source: str, x: np.ndarray, y: np.ndarray | None) -> list[Item]:
    return [Item(f"{source}[{i}]", image=x[i], label=None if y is None else int(y[i])) for i in range(len(x))]


def read_array_file(path: Path) -> list[Item]:
    """A Kaggle-layout CSV or an NPZ -> one Item per row (Fashion-MNIST images already: no conversion)."""

    if path.suffix.lower() == ".csv":

        x, y = table_to_arrays(read_kaggle_csv(path))
        return _rows(str(path), x, y)
    arrays = io.load_arrays(path)
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise PipelineError(f"{path}: holds arrays {sorted(arrays)}; expected `x` (and optionally `y`) or one array")
    x = arrays[key]
    if x.ndim == 2 and x.shape[1] == N_PIXELS:
        x = x.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or len(x) == 0:
        raise PipelineError(f"{path}: array `{key}` has shape {x.shape}; expected (N, 28, 28) or (N, 784)")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or x.min() < 0 or x.max() > 255:
            raise PipelineError(f"{path}: array `{key}` must hold pixel values 0..255, got dtype {x.dtype}")
        x = np.rint(x).astype(np.uint8)
    y = arrays.get("y") if key == "x" else None
    if y is not None and (y.shape != (len(x),) or y.min() < 0 or y.max() >= len(CLASS_NAMES)):
        y = None
    return _rows(str(path), x, y)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories -> their image/CSV/NPZ files, recursively, sorted. Unknown paths are kept
    (they become errors that name them)."""
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            accepted = IMAGE_SUFFIXES | ARRAY_SUFFIXES
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in accepted)
            if not found:
                raise PipelineError(f"{p}: directory holds no image, CSV or NPZ files",
                                    hint=f"accepted: {', '.join(sorted(IMAGE_SUFFIXES | ARRAY_SUFFIXES))}")
            paths += found
        else:
            paths.append(p)
    return paths


def read_inputs(inputs: Iterable[str | Path]) -> list[Item]:
    """Every input as Items, in order. A file that cannot be read becomes an error Item (never an exception)."""

    paths = expand_inputs(inputs)
    progress = BatchProgress("predict: reading inputs", len(paths), unit="files")
    items: list[Item] = []
    for path in paths:
        if not path.exists():
            items.append(Item(str(path), error="file not found"))
        elif path.suffix.lower() in ARRAY_SUFFIXES:
            try:
                items += read_array_file(path)
            except PipelineError as exc:
                items.append(Item(str(path), error=exc.what))
        else:
            items.append(read_picture(path))
        progress.update(1)
    return items


# ------------------------------------------------------------------------------ CLI
@dataclass(frozen=True)
class PredictParams:
    """params.yaml `predict`: images per predict call (and per progress step). Required: params.yaml only."""
    batch_size: int

    def __post_init__(self):
        if self.batch_size < 1:
            raise PipelineError(f"params.yaml: predict.batch_size must be >= 1, got {self.batch_size}")


def add_cli(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, directories of images, Kaggle-layout CSVs or NPZ files")
    parser.add_argument("--model", required=True, help="registered model name, trained in models/<model>/seed-<seed>/")
    parser.add_argument("--seed", type=int, default=None, help="which run (default: the first of train.seeds)")
    # Path defaults kept on purpose: this command is run by hand (README), also where no dvc.yaml is; they are
    # the paths dvc.yaml gives the stages that write these inputs (tests/test_params.py keeps them equal).
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=None, help="output file (default: stdout)")
    parser.add_argument("--format", choices=("csv", "json"), default=None,
                        help="default: json when --out ends in .json, else csv")


def cli(args) -> None:
    raw = load_params(args.params)
    batch_size = section(PredictParams, "predict", raw).batch_size
    seed = seed_of(raw, args.seed)
    directory = model_dir_for(args.models_dir, args.model, seed)
    items = read_inputs(args.inputs)
    errors = [i for i in items if i.error]
    for item in errors:
        print(f"predict: error: {item.input}: {item.error}", file=sys.stderr)
    predictor = registry.load_predictor(directory)
    preds = predict_items(predictor, items, batch_size=batch_size, label=f"predict [{args.model}]")
    records = [record(p) for p in preds]
    fmt = args.format or ("json" if args.out is not None and args.out.suffix.lower() == ".json" else "csv")
    meta = {"model": args.model, "seed": seed, "model_dir": str(directory)}
    text = render_json(records, meta) if fmt == "json" else render_csv(records)
    if args.out is None:
        sys.stdout.write(text)
    else:
        io.write_text(args.out, text)
    done = len(items) - len(errors)
    inverted = sum(1 for i in items if i.inverted)
    print(f"predict [{args.model}, seed {seed}]: {done} image(s) predicted"
          + (f", {inverted} picture(s) inverted (light background)" if inverted else "")
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    if errors:
        raise PipelineError(f"{len(errors)} of {len(items)} input(s) could not be read: "
                            + "; ".join(f"{i.input} ({i.error})" for i in errors[:5])
                            + (" ..." if len(errors) > 5 else ""),
                            hint="the other inputs were predicted; fix or remove the inputs named above")
