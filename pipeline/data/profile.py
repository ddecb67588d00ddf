"""profile command: rebuild the reference profile the data gate's drift checks compare against.

    python -m pipeline profile [--source /usr/share/datasets/fashion-mnist] [--out FILE]

Reads the four official IDX files (verified by the SHA-256 of their decompressed bytes, as fetch does) and
writes, per class, the share, pixel-value histogram, mean image and intensity deciles of all 70,000 official
images (pipeline.data.content.build_profile). The result is committed; it is not a DVC stage, because a stage
would rebuild it from whatever data it is given, and the point is to compare new data with the official set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.data.content import build_profile
from pipeline.data.fetch import load_idx_dir
from pipeline.params import ValidateParams, section

# Not params.yaml fetch.source: that is the data the gate judges (possibly a user's own files), while the
# reference must come from the official files; this is where Debian's dataset-fashion-mnist installs them.
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")


def add_cli(parser) -> None:
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="directory with the four official IDX files (Debian: dataset-fashion-mnist)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the profile JSON (default: params.yaml validate.drift.reference)")


def cli(args) -> None:
    out = args.out or Path(section(ValidateParams, "validate", path=args.params).drift["reference"])
    data = load_idx_dir(args.source)
    x = np.concatenate([data["train"][0], data["test"][0]])
    y = np.concatenate([data["train"][1], data["test"][1]])
    profile = build_profile(x, y, source="official Fashion-MNIST IDX files (train + test, SHA-256 verified)")
    io.write_text(out, json.dumps(profile, separators=(",", ":")) + "\n")
    print(f"profile: {len(x):,} official images -> {out} ({out.stat().st_size / 1024:.0f} KiB)",
          file=sys.stderr)
