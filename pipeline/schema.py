"""Facts about the Fashion-MNIST data contract: column names, image shape, pixel range, class names."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10
LABEL_COLUMN = "label"
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(1, N_PIXELS + 1))
CSV_COLUMNS = (LABEL_COLUMN, *PIXEL_COLUMNS)
PIXEL_MIN, PIXEL_MAX = 0, 255  # pixels are uint8 grey levels

# Official class names, in label order (Xiao et al. 2017).
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Filesystem-safe names for the PNG tree images/<split>/<class-slug>/<index>.png.
CLASS_SLUGS = (
    "t-shirt-top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)

SPLITS = ("train", "test")
CSV_NAMES = {split: f"fashion-mnist_{split}.csv" for split in SPLITS}


@dataclass(frozen=True)
class HeaderDiff:
    """How a file's column names differ from CSV_COLUMNS. Ingest (the CSV header) and validate (the Parquet
    columns) both diagnose a wrong header from this one comparison, each wording it for its own stage."""

    names: tuple[str, ...]
    missing: list[str]      # contract columns absent from names, in contract order
    unexpected: list[str]   # names outside the contract, in file order (a repeated one is listed each time)
    duplicated: list[str]   # names that occur more than once, sorted
    misplaced: list[int]    # 0-based positions whose name is not the contract's name at that position

    @property
    def is_permutation(self) -> bool:
        """Every contract column exactly once, in any order."""
        return not (self.missing or self.unexpected or self.duplicated)


def header_diff(names) -> HeaderDiff:
    """Compare column names with the contract `label,pixel1..pixel784`."""
    names = tuple(names)
    expected = set(CSV_COLUMNS)
    present = set(names)
    counts = Counter(names)
    return HeaderDiff(
        names=names,
        missing=[c for c in CSV_COLUMNS if c not in present],
        unexpected=[n for n in names if n not in expected],
        duplicated=sorted(n for n, k in counts.items() if k > 1),
        misplaced=[i for i, (a, e) in enumerate(zip(names, CSV_COLUMNS)) if a != e],
    )
