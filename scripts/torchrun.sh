#!/usr/bin/env bash
# `szdet train --resume auto` under torchrun, laid out by SkyPilot's variables (one process per
# GPU, every node), with the trainer's own exit code passed through: torchrun turns any failed
# worker into exit 1, which would hide 75 ("checkpointed and stopped: start me again") from
# SkyPilot's `recover_on_exit_codes`. Outside SkyPilot it runs one node with one process.
# Usage: scripts/torchrun.sh CONFIG
set -uo pipefail
config=${1:?usage: scripts/torchrun.sh CONFIG}
run_dir=$(python -c 'import sys; from szdet.config import load_config; print(load_config(sys.argv[1]).run_dir)' "$config") || exit 1
status_file=$run_dir/exit_status
rm -f "$status_file"  # a stale 75 from an earlier attempt must not mask this one's failure

head_ip=$(echo "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n1)
torchrun --nnodes="${SKYPILOT_NUM_NODES:-1}" --nproc-per-node="${SKYPILOT_NUM_GPUS_PER_NODE:-1}" \
  --node-rank="${SKYPILOT_NODE_RANK:-0}" --master-addr="$head_ip" --master-port=29500 \
  -m szdet.cli train --config "$config" --resume auto
code=$?
if [[ $code -ne 0 && -f $status_file ]]; then
  code=$(<"$status_file")
fi
exit "$code"
