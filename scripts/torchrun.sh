#!/usr/bin/env bash
# `szdet train --resume auto` under torchrun, laid out by SkyPilot's variables (one process per
# GPU, every node), ending with the trainer's own exit code: torchrun turns any failed worker into
# exit 1, which would hide 75 ("checkpointed and stopped: start me again") and 70 (a crash) from
# SkyPilot's `recover_on_exit_codes`. Outside SkyPilot it runs one node with one process.
#
# SkyPilot restarts 75 and 70 only (sky/train.yaml), never bad input (1-4). So that a crash that
# repeats cannot restart forever, a node's fourth crash in a row leaves as 1 (3 restarts, as Modal's
# train retries); the count lives in the run folder (the runs bucket), one file per node.
# Usage: scripts/torchrun.sh CONFIG
set -uo pipefail
config=${1:?usage: scripts/torchrun.sh CONFIG}
max_crashes=4
run_dir=$(python -c 'import sys; from szdet.config_load import load_config; print(load_config(sys.argv[1]).run_dir)' "$config") || exit 1
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

if [[ $code -eq 70 ]]; then
  crashes=$(( $(cat "$crash_file" 2>/dev/null || echo 0) + 1 ))
  mkdir -p "$run_dir" && echo "$crashes" > "$crash_file"
  if (( crashes >= max_crashes )); then
    echo "szdet: crashed $crashes times in a row on node $node; not asking for another restart" >&2
    code=1
  fi
else
  rm -f "$crash_file"  # it trained on (or stopped for another reason): the streak is over
fi
exit "$code"
