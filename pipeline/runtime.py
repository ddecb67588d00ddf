"""The process environment the pipeline's libraries read once, at their import: the one home of those defaults.

configure_environment() only fills in variables the user has not set (os.environ.setdefault), so a user's own
setting always wins. It must run before TensorFlow is imported; importing `pipeline` runs it (pipeline/__init__.py).
"""

from __future__ import annotations

import os


def configure_environment() -> None:
    # TensorFlow turns its oneDNN CPU kernels on by default only on recent Intel CPUs; on the AMD machines this
    # project is timed on they are off, and on they make CNN training markedly faster (docs/results/HISTORY.md,
    # "CPU speed"). TensorFlow reads it once, when it is imported; TF_ENABLE_ONEDNN_OPTS=0 turns the kernels off.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
