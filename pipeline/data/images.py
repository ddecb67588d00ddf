"""images stage: optional PNG tree `<out>/<split>/<class-slug>/<index>.png` (paper A's layout).

Off unless params.yaml says `convert.images: true`: then the output directory holds only a note saying so.
Encoding runs in a process pool (`convert.image_workers`), because PNG encoding is CPU-bound.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.params import ConvertParams, section
from pipeline.schema import CLASS_SLUGS, SPLITS


def _write_chunk(job: tuple[str, np.ndarray, np.ndarray, np.ndarray]) -> int:
    from PIL import Image

    root, x, y, index = job
    for img, label, idx in zip(x, y, index):
        Image.fromarray(img, mode="L").save(os.path.join(root, CLASS_SLUGS[label], f"{idx}.png"), optimize=False)
    return len(index)


def export_png_tree(arrays: dict[str, tuple[np.ndarray, np.ndarray]], root: Path, workers: int) -> int:
    """Write every image as a PNG under root/<split>/<class>/<index>.png; return how many were written."""
    jobs = []
    for split, (x, y) in arrays.items():
        for slug in CLASS_SLUGS:
            (root / split / slug).mkdir(parents=True, exist_ok=True)
        index = np.arange(len(y))
        for chunk in np.array_split(index, max(1, len(index) // 2000)):
            jobs.append((str(root / split), x[chunk], y[chunk], chunk))
    workers = workers or os.cpu_count() or 1
    total, started = sum(len(j[3]) for j in jobs), time.monotonic()
    done = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n in pool.map(_write_chunk, jobs):
            done += n
            print(f"\rimages: {done}/{total} PNGs ({time.monotonic() - started:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return done


def add_cli(parser) -> None:
    # Required: dvc.yaml is the one home of the pipeline's paths and always passes them.
    parser.add_argument("--processed", type=Path, required=True, help="directory with {train,test}.npz")
    parser.add_argument("--out", type=Path, required=True, help="root of the PNG tree")


def cli(args) -> None:
    params = section(ConvertParams, "convert", path=args.params)
    with io.atomic_dir(args.out) as tmp:
        if not params.images:
            (tmp / "README.txt").write_text(
                "PNG export is off. Set `convert.images: true` in params.yaml and run `dvc repro images`.\n")
            print("images: disabled (convert.images: false); wrote a note only", file=sys.stderr)
            return
        arrays = {}
        for split in SPLITS:
            data = io.load_arrays(args.processed / f"{split}.npz")
            arrays[split] = (data["x"], data["y"])
        n = export_png_tree(arrays, tmp, params.image_workers)
        print(f"images: wrote {n} PNGs under {args.out}", file=sys.stderr)
