#!/usr/bin/env bash
# Launch a training run on every worker of a Cloud TPU VM pod slice.
#
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=gs://my-bucket/runs/c10_infonoise \
#     bash experiments/tpu_pod.sh configs/cifar10_infonoise.py [--config.key=value ...]
#
# Every worker runs the same command; jax.distributed.initialize auto-detects the
# coordinator, process count and ids on Cloud TPU. Each host reads only its share of every
# global batch (prepare the TFDS dataset once into a bucket and pass
# --config.data.tfds_data_dir=gs://...); all hosts write the Orbax checkpoint to the
# shared gs:// workdir together, so re-running the same command resumes after preemption.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (gs://...)}"
CONFIG=${1:?usage: tpu_pod.sh <config.py> [overrides...]}
shift
OVERRIDES=$(printf ' %q' "$@")
# Ship this checkout's HEAD to every worker (no repository hosting assumed).
cd "$(git rev-parse --show-toplevel)"
git archive --format=tar.gz -o /tmp/infonoise_jax.tgz HEAD
gcloud compute tpus tpu-vm scp /tmp/infonoise_jax.tgz "$TPU":~/ --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  mkdir -p infonoise_jax && tar -xzf infonoise_jax.tgz -C infonoise_jax && cd infonoise_jax
  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]'
  .venv/bin/python -m infonoise_jax.main --config=$CONFIG --workdir=$WORKDIR \
      --config.system.distributed=True $OVERRIDES
"
