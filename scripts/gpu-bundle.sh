#!/usr/bin/env bash
# Build .gpu-bundle/, what scripts/gpu-check.sh needs on the lent GPU machine that its image lacks (no package
# index reaches it): the keras wheel and its two deps missing there (namex, optree; versions from
# requirements.lock, optree built for the machine's Python), and the four official Fashion-MNIST IDX files.
# Git ignores it; a device call carries it (carry: [".gpu-bundle"]). Needs pip and the package index here.
#
#   scripts/gpu-bundle.sh               # GPU_PYTHON_VERSION=3.12 (the device image's python3), GPU_BUNDLE=.gpu-bundle
#
# A call carries at most 64 MiB, the working tree included: this prints the bundle's size and the tree's, and
# fails if they add up to more.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
PYV=${GPU_PYTHON_VERSION:-3.12}
IDX=${GPU_CHECK_IDX:-/usr/share/datasets/fashion-mnist}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LIMIT_MIB=64

pins=()
for name in keras namex optree; do
  pin=$(grep -i "^${name}==" requirements.lock) || { echo "error [gpu-bundle]: $name is not in requirements.lock" >&2; exit 2; }
  pins+=("$pin")
done
rm -rf "$BUNDLE/wheels"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/fashion-mnist"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$BUNDLE/wheels" "${pins[@]}"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$IDX/$f" ] || { echo "error [gpu-bundle]: $IDX/$f not found (apt-get install dataset-fashion-mnist)" >&2; exit 2; }
  cp -p "$IDX/$f" "$BUNDLE/fashion-mnist/$f"
done

# What travels: tracked files and untracked files git does not ignore, plus the bundle.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
bundle_bytes=$(du -sb "$BUNDLE" | cut -f1)
total=$((tree_bytes + bundle_bytes))
ls -l "$BUNDLE/wheels" "$BUNDLE/fashion-mnist"
printf 'gpu-bundle: bundle %.1f MiB + working tree %.1f MiB = %.1f MiB of the %d MiB a call carries\n' \
  "$(echo "$bundle_bytes / 1048576" | bc -l)" "$(echo "$tree_bytes / 1048576" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)" "$LIMIT_MIB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error [gpu-bundle]: more than $LIMIT_MIB MiB would travel" >&2
  exit 1
fi
