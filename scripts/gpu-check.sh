#!/usr/bin/env bash
# The GPU check (issue 31): on a machine with an NVIDIA GPU and JAX but no TensorFlow (the lent device machine),
# install what it lacks from the carried bundle, then train the default set's CNNs (cnn-ours as its GPU variant)
# for 3 seeds each, evaluate them on the official test set and print one table (scripts/gpu_check.py).
#
#   here:    scripts/gpu-bundle.sh            # once: writes .gpu-bundle/ (wheels + the IDX files)
#   device:  scripts/gpu-check.sh             # in the repository root, with .gpu-bundle carried; 1 call, < 10 min
#   dry run: PYTHON=.venv/bin/python scripts/gpu-check.sh --set models.cnn-ours.gpu.epochs=1 ...   (CPU, JAX)
#
# Arguments go to scripts/gpu_check.py (--seeds, --models, --set KEY=VALUE, --test-rows, --budget-s).
# Environment: PYTHON (python3), GPU_BUNDLE (.gpu-bundle), GPU_CHECK_WORK (/tmp/gpu-check), GPU_CHECK_IDX (the
# bundle's fashion-mnist/, else /usr/share/datasets/fashion-mnist), KERAS_BACKEND (jax), OUT (where the table
# files are copied too, when set: the device machine's $OUT). docs/gpu.md has the whole procedure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
IDX=${GPU_CHECK_IDX:-}
if [ -z "$IDX" ]; then
  if [ -d "$BUNDLE/fashion-mnist" ]; then IDX=$BUNDLE/fashion-mnist; else IDX=/usr/share/datasets/fashion-mnist; fi
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# Install only the bundle's wheels whose distribution is missing here or at another version (on the device
# machine: keras, namex, optree; the rest of what train and evaluate import is in its image).
if [ -d "$BUNDLE/wheels" ]; then
  need=$("$PY" - "$BUNDLE/wheels" <<'EOF'
import pathlib
import sys
from importlib import metadata

for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        if metadata.version(name) == version:
            continue
    except metadata.PackageNotFoundError:
        pass
    print(wheel)
EOF
  )
  if [ -n "$need" ]; then
    site=$WORK/site
    echo "gpu-check: installing from $BUNDLE/wheels into $site:" $(basename -a $need)
    # shellcheck disable=SC2086  # one argument per wheel
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" $need
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
if ! "$PY" -c 'import keras' 2>/dev/null; then
  echo "error [gpu-check]: keras cannot be imported by $PY (KERAS_BACKEND=$KERAS_BACKEND)" >&2
  echo "  hint: build the bundle with scripts/gpu-bundle.sh and carry $BUNDLE with the call (docs/gpu.md)" >&2
  exit 2
fi
if [ ! -d "$IDX" ]; then
  echo "error [gpu-check]: no Fashion-MNIST IDX files at $IDX" >&2
  echo "  hint: scripts/gpu-bundle.sh copies them into $BUNDLE/fashion-mnist; carry $BUNDLE (docs/gpu.md)" >&2
  exit 2
fi
nvidia-smi -L 2>/dev/null || echo "gpu-check: nvidia-smi lists no GPU here: this is a run on the CPU"
exec "$PY" scripts/gpu_check.py --idx "$IDX" --work "$WORK" ${OUT:+--out "$OUT"} "$@"
