#!/usr/bin/env bash
# The one prepared GPU check (issue 3), a few minutes on one GPU with nothing downloaded:
#   1. `szdet check-kernels`: the pure Mamba-2 against the naive recurrence on the device (and
#      against mamba_ssm's Mamba2, forward and backward, when mamba_ssm is importable);
#   2. the trainer's own step at the cloud size (bf16 autocast, batch 64, fused AdamW): windows/s,
#      peak memory, model FLOPs utilisation. A batch that runs out of memory is reported and
#      halved, so the figures always say what fits.
# Results go to $OUT (default ./gpu_out): check_kernels.txt, train_step.json, gpu_check.log.
#
# Usage: scripts/gpu_check.sh [--device cuda|cpu] [--batch 64] [--steps 10] [--warmup 3]
#                             [--config configs/cloud/train.yaml]
# On a CPU (tests): scripts/gpu_check.sh --device cpu --batch 1 --steps 1 --warmup 0 \
#                       --config configs/local/smoke.yaml
# Python: $PYTHON, else .venv/bin/python, else python3. Wheels in ./.whl (e.g. pydantic where the
# image lacks it, or mamba_ssm + causal_conv1d builds) are installed to a temporary folder first.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda batch=64 steps=10 warmup=3 config=configs/cloud/train.yaml
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

out=${OUT:-./gpu_out}
mkdir -p "$out"
log=$out/gpu_check.log
if [[ -n ${PYTHON:-} ]]; then py=$PYTHON
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
fi

{
  echo "== gpu_check $(date -u +%FT%TZ) device=$device batch=$batch config=$config"
  if [[ $device == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; fi
} | tee "$log"

echo "== 1/2 szdet check-kernels" | tee -a "$log"
set +e
"$py" -m szdet.cli check-kernels 2>&1 | tee "$out/check_kernels.txt" | tee -a "$log"
check_rc=${PIPESTATUS[0]}
set -e

echo "== 2/2 training step" | tee -a "$log"
step_rc=1
while [[ $batch -ge 1 ]]; do
  attempt=$(mktemp)
  set +e
  "$py" benchmarks/bench_model.py train-step --device "$device" --config "$config" \
    --batch "$batch" --steps "$steps" --warmup "$warmup" --json "$out/train_step.json" \
    >"$attempt" 2>&1
  step_rc=$?
  set -e
  cat "$attempt" >>"$log"
  if [[ $step_rc -eq 0 ]]; then cat "$out/train_step.json"; break; fi
  if grep -q "OutOfMemoryError\|out of memory" "$attempt"; then
    echo "batch $batch ran out of memory; halving" | tee -a "$log"
    echo "{\"batch\": $batch, \"error\": \"out of memory\"}" >"$out/oom_batch_$batch.json"
    batch=$((batch / 2))
  else
    tail -n 30 "$attempt"
    break
  fi
done

echo "== check-kernels exit $check_rc, train step exit $step_rc" | tee -a "$log"
[[ $check_rc -eq 0 && $step_rc -eq 0 ]]
