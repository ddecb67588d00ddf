#!/usr/bin/env bash
# System packages the project needs: the real Fashion-MNIST from Debian (dataset-fashion-mnist).
set -euo pipefail
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to apt-get install dataset-fashion-mnist" >&2; exit 1; }
  SUDO="sudo"
fi
echo "installing Debian package dataset-fashion-mnist (the official Fashion-MNIST IDX files)..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
