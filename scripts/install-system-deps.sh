#!/usr/bin/env bash
# System packages, through apt (Debian 12; see README "Supported systems"):
#   scripts/install-system-deps.sh          what the pipeline needs: the real Fashion-MNIST (Debian's
#                                           dataset-fashion-mnist) and Python 3.11 with its venv module
#   scripts/install-system-deps.sh --test   also headless Chromium, for the one test that screenshots the `serve`
#                                           page; without root/sudo, or on Ubuntu (whose chromium is a snap), it
#                                           says so and that test is skipped with the reason
# Installs only what is missing, so a second call does nothing.
set -euo pipefail
mode="${1:-pipeline}"
case "$mode" in
  pipeline|--test) ;;
  *) echo "usage: scripts/install-system-deps.sh [--test]" >&2; exit 2 ;;
esac

packages=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || packages+=(dataset-fashion-mnist)
python="${PYTHON:-python3.11}"
if ! command -v "$python" >/dev/null; then
  packages+=(python3.11 python3.11-venv)
elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  packages+=(python3.11-venv)          # Debian splits `python3 -m venv` (ensurepip) into its own package
fi

browser=0
if [ "$mode" = --test ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if grep -qi '^ID=ubuntu' /etc/os-release 2>/dev/null; then
    echo "note: Ubuntu ships Chromium only as a snap; install it by hand (snap install chromium) for the" \
         "serve page's screenshot test, which is skipped without it" >&2
  else
    browser=1
  fi
fi

[ "${#packages[@]}" -eq 0 ] && [ "$browser" -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  elif [ "${#packages[@]}" -eq 0 ]; then
    echo "note: not root and no sudo: Chromium not installed; the serve page's screenshot test will be skipped" >&2
    exit 0
  else
    echo "error: need root (or sudo) to apt-get install: ${packages[*]}" >&2
    echo "how to fix: run \`sudo apt-get install -y ${packages[*]}\` once, then repeat the command" >&2
    exit 1
  fi
fi
$SUDO apt-get update -qq
if [ "${#packages[@]}" -gt 0 ]; then
  echo "installing Debian package(s): ${packages[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
if [ "$browser" -eq 1 ]; then
  echo "installing Debian package chromium (headless browser for the serve page's test)..." >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
