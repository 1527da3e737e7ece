#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: every worker runs the same command (gcloud --worker=all),
# jax.distributed joins them (JAX detects the slice itself), each worker feeds its own
# rows of the global batch, orbax writes one checkpoint to a workdir every worker sees.
# The workdir is a local path: mount a bucket at the same place on every worker (gcsfuse,
# or a Filestore share); the trainer does not take gs:// URLs as workdirs.
#
#   TPU_NAME=dsvl-v5p-128 ZONE=us-east5-a experiments/tpu_pod.sh setup
#   TPU_NAME=dsvl-v5p-128 ZONE=us-east5-a experiments/tpu_pod.sh run \
#       --config=configs/deepseek_vl_7b.py:stage2 --workdir=/mnt/bucket/runs/7b-stage2 \
#       --config.train.init_from=/mnt/bucket/runs/7b-stage1 \
#       --config.compile_cache.dir=gs://BUCKET/jax-cache
#
# setup  copies this checkout to every worker and installs it with jax[tpu]
# run    starts the job on every worker (a rerun of the same command resumes it)
# stop   kills the job on every worker (SIGTERM: each saves and exits; see BUILD.md)
# Optional: PROJECT (gcloud project), REMOTE_DIR (default ~/dsvl_jax).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
REMOTE_DIR=${REMOTE_DIR:-dsvl_jax}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GCLOUD=(gcloud compute tpus tpu-vm)
TARGET=(--zone="$ZONE" ${PROJECT:+--project="$PROJECT"} --worker=all)

on_all() {  # run a shell command on every worker of the slice
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${TARGET[@]}" --command="$1"
}

case "${1:-}" in
  setup)
    tar -C "$ROOT" --exclude=.venv --exclude=workdir --exclude=.git -czf /tmp/dsvl_jax.tgz .
    "${GCLOUD[@]}" scp /tmp/dsvl_jax.tgz "$TPU_NAME":/tmp/dsvl_jax.tgz "${TARGET[@]}"
    on_all "mkdir -p $REMOTE_DIR && tar -C $REMOTE_DIR -xzf /tmp/dsvl_jax.tgz && cd $REMOTE_DIR \
      && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]'"
    ;;
  run)
    shift
    args=$(printf " %q" "$@")
    # mode=initialize: JAX reads the slice's workers from the TPU metadata; logs of
    # process 0 carry the metrics, the others stay quiet.
    on_all "cd $REMOTE_DIR && .venv/bin/python -m dsvl_jax.main$args \
      --config.distributed.mode=initialize 2>&1 | tee -a ~/dsvl_jax_run.log"
    ;;
  stop)
    on_all "pkill -TERM -f '^.venv/bin/python -m dsvl_jax.main' || true"
    ;;
  *)
    sed -n '2,19p' "$0"
    exit 2
    ;;
esac
