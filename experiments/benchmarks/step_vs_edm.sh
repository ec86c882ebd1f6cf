#!/usr/bin/env bash
# Issue 13 item 1: our CIFAR-10 DDPM++ train step in bf16 against NVlabs/edm's own PyTorch
# training step in its fp16 mode (batch 512), on the same card in the same call. Runs
#   1. python experiments/benchmarks/train_step_bench.py --config=configs/cifar10_infonoise.py
#        --dtypes=bfloat16 --iters=10
#   2. python experiments/benchmarks/edm_pytorch_bench.py --edm_dir=$EDM_DIR --batch=512 --fp16
#        (EDM's CIFAR-10 recipe, augment pipe on), then the same with --no-augment
# one after the other, writes both outputs to OUT_DIR and prints the ratio of images/s
# (target: ours >= 2.5x EDM fp16).
#
#   bash experiments/benchmarks/step_vs_edm.sh [OUT_DIR]     # OUT_DIR default: $OUT, else /tmp
#
# What must be there, relative to the repository root:
#   .data/edm  an unmodified clone of github.com/NVlabs/edm (EDM_DIR=... to use another path),
#              e.g. `git clone https://github.com/NVlabs/edm .data/edm`; .data/ is git-ignored,
#              so on a device machine it has to be carried.
#   .whl/      (optional) wheels of this repository's pure-Python requirements for a host
#              without network; when present they are installed into .site/ first.
# The host needs jax with CUDA, torch with CUDA and numpy (the GPU image: Python 3.12,
# torch 2.11, jax 0.11.2). EDM's `requests` import is stubbed when the package is absent
# (--stub_requests); its `distutils` import on Python 3.12 is shimmed by the script.
#
# On the project's device machine (the exact call; the files come back from $OUT):
#   run(carry=[".data/edm", ".whl"], command="bash experiments/benchmarks/step_vs_edm.sh $OUT")
#
# Env: EDM_DIR (.data/edm), ITERS (10, both sides), EDM_ARGS (extra edm_pytorch_bench.py flags,
# e.g. "--tf32" or "--host_data"), SKIP_NO_AUGMENT=1 to time EDM's recipe only, OURS_ARGS
# (extra train_step_bench.py flags). A CPU dry run of the whole script, tiny models, minutes:
#   ITERS=1 OURS_ARGS="--batch_size=2 --set model.model_channels=16 model.num_blocks=1" \
#   EDM_ARGS="--device=cpu --batch=2 --tiny --no-fp16 --warmup=1 --repeats=1" \
#   bash experiments/benchmarks/step_vs_edm.sh /tmp/step_vs_edm
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-/tmp/step_vs_edm}}
EDM_DIR=${EDM_DIR:-.data/edm}
ITERS=${ITERS:-10}
mkdir -p "$OUT_DIR"
if [ ! -d "$EDM_DIR/training" ]; then
  echo "no NVlabs/edm checkout at $EDM_DIR (carry .data/edm or set EDM_DIR)" >&2
  exit 2
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target .site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi > /dev/null && nvidia-smi -L

echo "== ours: train_step_bench.py bf16 ($(date +%T))"
# shellcheck disable=SC2086  # OURS_ARGS is a list of flags
timeout 500 python3 experiments/benchmarks/train_step_bench.py \
  --config=configs/cifar10_infonoise.py --dtypes=bfloat16 --iters="$ITERS" ${OURS_ARGS:-} \
  2>&1 | tee "$OUT_DIR/ours_bf16.txt"
echo "rc ${PIPESTATUS[0]}"

edm() {  # name, extra flags
  local name=$1
  shift
  echo "== EDM: edm_pytorch_bench.py $* ($(date +%T))"
  # shellcheck disable=SC2086  # EDM_ARGS is a list of flags
  timeout 300 python3 experiments/benchmarks/edm_pytorch_bench.py --edm_dir="$EDM_DIR" \
    --batch=512 --fp16 --iters="$ITERS" --stub_requests --json_out="$OUT_DIR/$name.json" \
    "$@" $EDM_ARGS 2>&1 | tee "$OUT_DIR/$name.txt"
  echo "rc ${PIPESTATUS[0]}"
}
EDM_ARGS=${EDM_ARGS:-}
edm edm_fp16
[ "${SKIP_NO_AUGMENT:-0}" = 1 ] || edm edm_fp16_noaug --no-augment

python3 - "$OUT_DIR" << 'EOF'
import json, os, sys

out = sys.argv[1]


def ours():  # the bfloat16 row of train_step_bench.py's markdown table
  header = None
  for line in open(os.path.join(out, "ours_bf16.txt")):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if "images/s" in cells:
      header = cells
    elif header and cells[0] == "bfloat16":
      return float(cells[header.index("images/s")])
  return None


mine = ours()
print(f"\nours bf16: {mine} images/s")
for name in ("edm_fp16", "edm_fp16_noaug"):
  path = os.path.join(out, name + ".json")
  if not os.path.exists(path):
    continue
  r = json.load(open(path))
  what = f"EDM {r['mode']} ({', '.join(r['extras'])}), {r['device_name']}"
  ratio = f"{mine / r['images_per_s']:.2f}x" if mine else "n/a"
  print(f"{what}: {r['images_per_s']:.0f} images/s -> ours / EDM = {ratio} (target 2.5x)")
EOF
