#!/usr/bin/env bash
# System packages the project needs: the real Fashion-MNIST from Debian (dataset-fashion-mnist), and headless
# Chromium for the test that screenshots the `serve` page (tests/test_serve.py).
set -euo pipefail
need_data=0; need_chromium=0
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_data=1
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need_chromium=1
if [ "$need_data" -eq 0 ] && [ "$need_chromium" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to apt-get install dataset-fashion-mnist / chromium" >&2; exit 1; }
  SUDO="sudo"
fi
$SUDO apt-get update -qq
if [ "$need_data" -eq 1 ]; then
  echo "installing Debian package dataset-fashion-mnist (the official Fashion-MNIST IDX files)..." >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
fi
if [ "$need_chromium" -eq 1 ]; then
  echo "installing Debian package chromium (headless browser for the serve page's test)..." >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
