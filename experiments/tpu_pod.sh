#!/usr/bin/env bash
# Run training, sampling or evaluation on every worker of a Cloud TPU VM pod slice.
#
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=gs://my-bucket/runs/c10_infonoise \
#     bash experiments/tpu_pod.sh train configs/cifar10_infonoise.py [--config.key=value ...]
#   TPU=... ZONE=... WORKDIR=... bash experiments/tpu_pod.sh sample --num=50000
#   TPU=... ZONE=... WORKDIR=... bash experiments/tpu_pod.sh evaluate --seed_sets=3
#   TPU=... ZONE=... bash experiments/tpu_pod.sh logs      # last lines of every worker's log
#
# Every worker runs the same command, detached (nohup), with its own log file
# ~/infonoise_<command>_<host>.log on that worker (appended, each attempt under a dated line);
# `logs` prints their tails. The workers run this checkout's HEAD commit (uncommitted edits are
# warned about and left out); a config file that is not the commit's own (yours, anywhere, or
# an edited one) is copied to ~/infonoise_configs/ on every worker and read from there. All three
# commands start multi-host JAX the same way (jax.distributed.initialize, which auto-detects
# the coordinator, process count and ids on Cloud TPU): training with
# --config.system.distributed=True, sample and evaluate with --distributed. Each host reads
# only its share of every global batch (prepare the TFDS dataset once into a bucket and pass
# --config.data.tfds_data_dir=gs://...); all hosts write the Orbax checkpoint to the shared
# gs:// workdir together, so re-running the same train command resumes after preemption.
#
# The package is installed with the `gcs` extra (gcsfs, google-cloud-storage: what epath,
# Orbax and the TensorBoard writer need for gs:// without TensorFlow) and constraints.txt,
# which pins jax to the version tested for the VM's Python; jax[tpu] is pinned to the same.
# On each worker the code of a commit lies in ~/infonoise_jax_<commit> and the venv in
# ~/infonoise_venv, both kept: a requeued `train` (or a `sample` started beside a running
# training) neither reinstalls nor removes the code or venv a running job uses; a new commit
# is installed into the venv once. Each job runs `python -m` from its commit's folder, so it
# imports that commit's code, not the venv's installed copy (which a launch of a newer commit
# replaces under running jobs); the venv provides the dependencies.
#
# `evaluate` of an image run needs the FID Inception weights on every worker: the local
# ${FID_WEIGHTS:-~/.cache/infonoise_jax/inception_fid.npz} (docs/fid.md says how to make it)
# is copied to the same place on each.
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
: "${TPU:?set TPU to the TPU VM name (bash experiments/tpu_pod.sh --help)}" "${ZONE:?set ZONE}"
MODE=${1:?usage: tpu_pod.sh train|sample|evaluate|logs [args...]}
shift
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$1"; }
if [ "$MODE" = logs ]; then
  ssh_all 'for f in ~/infonoise_*.log; do echo "== $(hostname) $f"; tail -n 5 "$f"; done'
  exit 0
fi
: "${WORKDIR:?set WORKDIR (gs://...)}"
case "$MODE" in
  train)
    CONFIG=${1:?usage: tpu_pod.sh train <config.py> [overrides...]}
    shift
    CONFIG_FILE=${CONFIG%%:*}
    VARIANT=${CONFIG#"$CONFIG_FILE"}  # ":variant" or ""
    if [ ! -f "$CONFIG_FILE" ]; then
      echo "error: config file $CONFIG_FILE not found (relative to $PWD)" >&2
      exit 2
    fi
    CONFIG_ABS=$(cd "$(dirname "$CONFIG_FILE")" && pwd)/$(basename "$CONFIG_FILE")
    CMD="python -m infonoise_jax.main --config=@CONFIG@ --workdir=$WORKDIR --config.system.distributed=True" ;;
  sample) CMD="python -m infonoise_jax.sample --workdir=$WORKDIR --distributed" ;;
  evaluate) CMD="python -m infonoise_jax.evaluate --workdir=$WORKDIR --distributed" ;;
  *) echo "unknown command $MODE: train | sample | evaluate | logs" >&2; exit 2 ;;
esac
CMD="$CMD$(printf ' %q' "$@")"
# Ship this checkout's HEAD to every worker (no repository hosting assumed).
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"  # this script's checkout, from anywhere
COMMIT=$(git rev-parse --short=12 HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "warning: this checkout has uncommitted changes to tracked files; the workers get commit" \
    "$COMMIT without them (git archive HEAD): commit them to run them" >&2
fi
if [ "$MODE" = train ]; then
  # The commit's own config file (unchanged) is read from the commit's folder; any other (one
  # of your own outside the repository, or an edited one) is copied to every worker.
  REL=${CONFIG_ABS#"$PWD"/}
  if [ "$REL" != "$CONFIG_ABS" ] && git ls-files --error-unmatch -- "$REL" > /dev/null 2>&1 \
    && git diff --quiet HEAD -- "$REL"; then
    WORKER_CONFIG=$(printf '%q' "$REL$VARIANT")
  else
    ssh_all "mkdir -p ~/infonoise_configs"
    gcloud compute tpus tpu-vm scp "$CONFIG_ABS" "$TPU":~/infonoise_configs/ --zone "$ZONE" \
      --worker=all
    WORKER_CONFIG="\$HOME/infonoise_configs/$(printf '%q' "$(basename "$CONFIG_ABS")$VARIANT")"
    echo "copied $CONFIG_ABS to ~/infonoise_configs/ on every worker" >&2
  fi
  CMD=${CMD/@CONFIG@/$WORKER_CONFIG}
fi
git archive --format=tar.gz -o "/tmp/infonoise_jax_$COMMIT.tgz" HEAD
gcloud compute tpus tpu-vm scp "/tmp/infonoise_jax_$COMMIT.tgz" "$TPU":~/ --zone "$ZONE" --worker=all
if [ "$MODE" = evaluate ]; then
  WEIGHTS=${FID_WEIGHTS:-$HOME/.cache/infonoise_jax/inception_fid.npz}
  if [ -f "$WEIGHTS" ]; then
    ssh_all "mkdir -p ~/.cache/infonoise_jax"
    gcloud compute tpus tpu-vm scp "$WEIGHTS" "$TPU":~/.cache/infonoise_jax/inception_fid.npz \
      --zone "$ZONE" --worker=all
  else
    echo "warning: no FID Inception weights at $WEIGHTS: evaluate of an image run will fail" \
      "on the workers (docs/fid.md: python -m infonoise_jax.evaluation.convert_inception)" >&2
  fi
fi
ssh_all "
  set -e
  python3 -c 'import sys; assert sys.version_info >= (3, 11), \"Python >= 3.11 needed, the VM has \" + sys.version.split()[0] + \": use a TPU VM image with Python 3.11 or 3.12\"'
  JAX=\$(python3 -c 'import sys; print(\"0.11.2\" if sys.version_info >= (3, 12) else \"0.10.2\")')
  CODE=~/infonoise_jax_$COMMIT VENV=~/infonoise_venv
  if [ ! -f \$CODE/.unpacked ]; then
    rm -rf \$CODE.tmp && mkdir \$CODE.tmp && tar -xzf ~/infonoise_jax_$COMMIT.tgz -C \$CODE.tmp
    touch \$CODE.tmp/.unpacked && rm -rf \$CODE && mv \$CODE.tmp \$CODE
  fi
  [ -x \$VENV/bin/pip ] || python3 -m venv \$VENV
  if [ ! -f \$VENV/.installed_$COMMIT ]; then
    (cd \$CODE && \$VENV/bin/pip install -q -c constraints.txt '.[gcs]' \"jax[tpu]==\$JAX\" \\
      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html)
    touch \$VENV/.installed_$COMMIT
  fi
  cd \$CODE
  LOG=~/infonoise_${MODE}_\$(hostname).log  # appended: a requeue keeps the earlier attempts
  echo \"== \$(date -u) commit $COMMIT\" >> \$LOG
  nohup \$VENV/bin/$CMD >> \$LOG 2>&1 < /dev/null &
  echo \"\$(hostname): started ($COMMIT), log ~/infonoise_${MODE}_\$(hostname).log\"
"
