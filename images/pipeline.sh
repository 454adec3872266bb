#!/bin/sh
# The Kubernetes Job's command: run the pipeline's steps in order in one container, stop at the
# first that fails and exit with its code (0 ok, 2 bad input, 1 failure).
#
#   tunebox-pipeline --config /app/recipes/run.yaml [--set key=value ...]
#
# TUNEBOX_STEPS   the steps, in order (default: prep train merge evaluate bundle)
#
# Multi-node (an Indexed Job, one pod per node; set by k8s/overlays/multi-node): MS_WORKER_NUM,
# MS_SCHED_HOST (pod 0's DNS name), MS_SCHED_PORT and JOB_COMPLETION_INDEX are set. Pod 0 runs
# every step and hosts msrun's scheduler; the other pods only join the train step, whose msrun
# waits up to TUNEBOX_CLUSTER_TIMEOUT seconds for pod 0 to finish prep. TUNEBOX_LOCAL_WORKERS
# workers (one per NPU) run in each pod. These are the variables MindSpore's own cluster start and
# Huawei's AscendJob operator use, so the same script works under that operator too.
set -u

steps=${TUNEBOX_STEPS:-prep train merge evaluate bundle}
index=${JOB_COMPLETION_INDEX:-0}
nodes_mode=0
if [ -n "${MS_WORKER_NUM:-}" ] && [ -n "${MS_SCHED_HOST:-}" ] && [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
    nodes_mode=1
fi

job_dir() {
    # Where a step writes, from the spec itself (run_id, runs_dir and any --set).
    python - "$@" <<'EOF'
import argparse, sys
from jobs.core.config import load_spec
step, argv = sys.argv[1], sys.argv[2:]
parser = argparse.ArgumentParser()
parser.add_argument("--config", "-c", required=True)
parser.add_argument("--set", dest="overrides", action="append", default=[])
args, _ = parser.parse_known_args(argv)
print(load_spec(args.config, args.overrides).job_dir(step))
EOF
}

run_step() {
    step=$1
    shift
    echo "pipeline: ---- $step ($(date -u +%H:%M:%S) UTC) ----"
    if [ "$step" = train ] && [ "$nodes_mode" = 1 ]; then
        train_dir=$(job_dir train "$@") || return 2
        until getent hosts "$MS_SCHED_HOST" >/dev/null; do
            echo "pipeline: waiting for $MS_SCHED_HOST (pod 0) to appear in DNS"
            sleep 5
        done
        msrun --worker_num="$MS_WORKER_NUM" --local_worker_num="${TUNEBOX_LOCAL_WORKERS:-4}" \
              --master_addr="$MS_SCHED_HOST" --master_port="${MS_SCHED_PORT:-8118}" \
              --node_rank="$index" --log_dir="$train_dir/msrun/node-$index" --join=True \
              --cluster_time_out="${TUNEBOX_CLUSTER_TIMEOUT:-3600}" \
              /app/jobs/train_worker.py "$@" --set "train.workers=$MS_WORKER_NUM"
    else
        # The cluster variables are for msrun only: a single-process step must not see them.
        env -u MS_WORKER_NUM -u MS_SCHED_HOST -u MS_SCHED_PORT python -m "jobs.$step" "$@"
    fi
}

for step in $steps; do
    if [ "$nodes_mode" = 1 ] && [ "$index" != 0 ] && [ "$step" != train ]; then
        continue  # pods 1..N-1 exist for the train step only
    fi
    run_step "$step" "$@"
    code=$?
    if [ "$code" != 0 ]; then
        echo "pipeline: $step failed with exit code $code; later steps not run" >&2
        exit "$code"
    fi
done
echo "pipeline: done ($steps)"
