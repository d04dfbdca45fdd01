#!/usr/bin/env bash
# `szdet train --resume auto` under torchrun, laid out by SkyPilot's variables (one process per
# GPU, every node), ending with the trainer's own exit code: torchrun turns any failed worker into
# exit 1, which would hide 75 ("checkpointed and stopped: start me again") and 70 (a crash) from
# SkyPilot's `recover_on_exit_codes`. Outside SkyPilot it runs one node with one process.
#
# SkyPilot restarts 75 and 70 only (sky/train.yaml), never bad input (1-4); a node's crash past
# src/szdet/cloud/restart.py's bound leaves as 1. The count lives in the run folder (the runs
# bucket), one file per node.
# Usage: scripts/torchrun.sh CONFIG
set -uo pipefail
config=${1:?usage: scripts/torchrun.sh CONFIG}
run_dir=$(python -m szdet.cli config --config "$config" run_dir) || exit 1
node=${SKYPILOT_NODE_RANK:-0}
crash_file=$run_dir/crashes-node$node
status_file=$(mktemp)
trap 'rm -f "$status_file"' EXIT

head_ip=$(echo "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n1)
torchrun --nnodes="${SKYPILOT_NUM_NODES:-1}" --nproc-per-node="${SKYPILOT_NUM_GPUS_PER_NODE:-1}" \
  --node-rank="$node" --master-addr="$head_ip" --master-port=29500 \
  -m szdet.cli train --config "$config" --resume auto --exit-status "$status_file"
code=$?
if [[ $code -ne 0 ]]; then
  # No status: the trainer died without unwinding (killed, aborted by NCCL, a segfault): a crash.
  code=$(cat "$status_file" 2>/dev/null)
  code=${code:-70}
fi

# The crash bound is szdet's restart policy (src/szdet/cloud/restart.py), one streak per node.
python -m szdet.cloud.restart "$code" "$crash_file"
