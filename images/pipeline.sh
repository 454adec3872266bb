#!/bin/sh
# The Kubernetes Job's command: run the pipeline's steps in order in one container, stop at the
# first that fails and exit with its code (0 ok, 2 bad input, 1 failure).
#
#   tunebox-pipeline --config /app/recipes/run.yaml [--set key=value ...]
#
# TUNEBOX_STEPS   the steps, in order (default: weights prep train merge evaluate bundle)
#
# Multi-node, two ways of being told the cluster (workers per pod = NPUs per pod):
# - Huawei's Ascend operator (k8s/overlays/ascend-job): MS_ROLE, MS_SCHED_HOST, MS_SCHED_PORT,
#   MS_WORKER_NUM, MS_LOCAL_WORKER and MS_NODE_RANK are set in every pod (ascend-operator,
#   pkg/controllers/v1/env.go). The Scheduler pod (MS_ROLE=MS_SCHED) waits for prep, then runs the
#   train entry as MindSpore's scheduler process; Worker 0 runs every step; Workers 1..N-1 only
#   the train step. Each Worker starts MS_LOCAL_WORKER workers with msrun --node_rank=MS_NODE_RANK.
# - A plain Indexed Job (k8s/overlays/multi-node): MS_WORKER_NUM, MS_SCHED_HOST (pod 0's DNS name),
#   MS_SCHED_PORT and JOB_COMPLETION_INDEX; TUNEBOX_LOCAL_WORKERS workers per pod. Pod 0 runs every
#   step and hosts msrun's scheduler; the other pods only join the train step.
# Either way every rank (train_worker.py) first waits for prep's manifest, up to cluster.prep_timeout
# seconds (TUNEBOX_PREP_TIMEOUT overrides), then msrun waits up to TUNEBOX_CLUSTER_TIMEOUT seconds for
# the cluster to form.
set -u

steps=${TUNEBOX_STEPS:-weights prep train merge evaluate bundle}
mode=single
rank=0
local_workers=${TUNEBOX_LOCAL_WORKERS:-4}
if [ -n "${MS_ROLE:-}" ] && [ -n "${MS_SCHED_HOST:-}" ] && [ -n "${MS_WORKER_NUM:-}" ]; then
    mode=operator
    rank=${MS_NODE_RANK:-0}
    local_workers=${MS_LOCAL_WORKER:-$local_workers}
elif [ -n "${MS_WORKER_NUM:-}" ] && [ -n "${MS_SCHED_HOST:-}" ] && [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
    mode=indexed
    rank=$JOB_COMPLETION_INDEX
fi
timeout=${TUNEBOX_CLUSTER_TIMEOUT:-3600}

job_dir() {
    # Where a step writes, from the spec itself (run_id, runs_dir and any --set).
    python - "$@" <<'PY'
import argparse, sys
from tunebox.config import load_spec
from tunebox.io import InputError
step, argv = sys.argv[1], sys.argv[2:]
parser = argparse.ArgumentParser()
parser.add_argument("--config", "-c", required=True)
parser.add_argument("--set", dest="overrides", action="append", default=[])
args, _ = parser.parse_known_args(argv)
try:
    print(load_spec(args.config, args.overrides).job_dir(step))
except InputError as exc:  # a bad spec or --set: one line, as the jobs say it
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
PY
}

wait_for_dns() {
    until getent hosts "$MS_SCHED_HOST" >/dev/null; do
        echo "pipeline: waiting for the scheduler $MS_SCHED_HOST to appear in DNS"
        sleep 5
    done
}

run_scheduler() {
    # MindSpore's scheduler process: the train entry with MS_ROLE=MS_SCHED, as msrun starts it.
    # Like every rank, it first waits for prep's manifest (Worker 0 runs prep), up to
    # cluster.prep_timeout / TUNEBOX_PREP_TIMEOUT (tunebox/training/launch.py, wait_for_prep).
    train_dir=$(job_dir train "$@") || return 2
    mkdir -p "$train_dir/msrun"
    log="$train_dir/msrun/scheduler.log"
    echo "pipeline: scheduler for $MS_WORKER_NUM workers on port ${MS_SCHED_PORT:-}, once prep is done; log $log"
    python /app/jobs/train_worker.py "$@" --set "train.workers=$MS_WORKER_NUM" >"$log" 2>&1
    code=$?
    tail -n 50 "$log"
    return "$code"
}

run_step() {
    step=$1
    shift
    echo "pipeline: ---- $step ($(date -u +%H:%M:%S) UTC) ----"
    if [ "$step" = train ] && [ "$mode" != single ]; then
        if [ "$mode" = operator ] && [ "$MS_ROLE" = MS_SCHED ]; then
            run_scheduler "$@"
            return $?
        fi
        train_dir=$(job_dir train "$@") || return 2
        wait_for_dns
        msrun --worker_num="$MS_WORKER_NUM" --local_worker_num="$local_workers" \
              --master_addr="$MS_SCHED_HOST" --master_port="${MS_SCHED_PORT:-8118}" \
              --node_rank="$rank" --log_dir="$train_dir/msrun/node-$rank" --join=True \
              --cluster_time_out="$timeout" \
              /app/jobs/train_worker.py "$@" --set "train.workers=$MS_WORKER_NUM"
    else
        # The cluster variables are for msrun only: a single-process step must not see them.
        env -u MS_WORKER_NUM -u MS_SCHED_HOST -u MS_SCHED_PORT -u MS_ROLE -u MS_NODE_RANK -u MS_LOCAL_WORKER \
            -u MS_SERVER_NUM python -m "jobs.$step" "$@"
    fi
}

for step in $steps; do
    if [ "$mode" != single ] && [ "$step" != train ]; then
        # Only the first worker runs the single-process steps; the scheduler and the others train only.
        if [ "$rank" != 0 ] || [ "${MS_ROLE:-}" = MS_SCHED ]; then
            continue
        fi
    fi
    run_step "$step" "$@"
    code=$?
    if [ "$code" != 0 ]; then
        echo "pipeline: $step failed with exit code $code; later steps not run" >&2
        exit "$code"
    fi
done
echo "pipeline: done ($steps)"
