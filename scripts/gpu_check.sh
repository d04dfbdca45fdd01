#!/usr/bin/env bash
# The one prepared GPU check, under 8 minutes on one GPU with nothing downloaded:
#   1. `szdet check-kernels --require-cuda-kernels`: mamba_ssm's fused path (what training runs)
#      against the pure path on the device, forward and backward, at the cloud model's sizes;
#   2. the trainer's step (bf16 autocast, fused AdamW) at the cloud config and batch: windows/s,
#      peak memory, MFU; then one more step with every Triton grid recorded as it runs (the
#      launch audit on the real device). A batch that runs out of memory is halved and reported;
#   3. a short cloud-config training run on a small synthetic corpus: a few steps, one validation
#      pass over dev, a checkpoint; its wall time and metrics.
# Results go to $OUT (default ./gpu_out): check_kernels.txt, train_step.json, validation.json,
# gpu_check.json (the summary) and gpu_check.log.
#
# Usage: scripts/gpu_check.sh [--device cuda|cpu] [--batch 64] [--steps 10] [--warmup 3]
#                             [--config configs/cloud/train.yaml] [--train-steps 20]
# On a CPU (tests): scripts/gpu_check.sh --device cpu --batch 1 --steps 1 --warmup 0 \
#                       --config configs/local/smoke.yaml --train-steps 2
# Python: $PYTHON, else .venv/bin/python, else python3. Wheels in ./.whl (e.g. pydantic where the
# image lacks it, or mamba_ssm + causal_conv1d builds) are installed to a temporary folder first.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda batch=64 steps=10 warmup=3 config=configs/cloud/train.yaml train_steps=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --train-steps) train_steps=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

out=${OUT:-./gpu_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
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
szdet() { "$py" -m szdet.cli "$@"; }

{
  echo "== gpu_check $(date -u +%FT%TZ) device=$device batch=$batch config=$config"
  if [[ $device == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; fi
} | tee "$log"

echo "== 1/3 szdet check-kernels" | tee -a "$log"
require=()
[[ $device == cuda ]] && require=(--require-cuda-kernels)
set +e
szdet check-kernels "${require[@]}" 2>&1 | tee "$out/check_kernels.txt" | tee -a "$log"
check_rc=${PIPESTATUS[0]}
set -e

echo "== 2/3 training step, then the launch audit" | tee -a "$log"
audit=()
[[ $device == cuda ]] && audit=(--audit-launches)
step_rc=1
while [[ $batch -ge 1 ]]; do
  attempt=$(mktemp)
  set +e
  "$py" benchmarks/bench_model.py train-step --device "$device" --config "$config" \
    --batch "$batch" --steps "$steps" --warmup "$warmup" --json "$out/train_step.json" \
    "${audit[@]}" >"$attempt" 2>&1
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

echo "== 3/3 $train_steps training steps and one validation pass on a synthetic corpus" | tee -a "$log"
work=$(mktemp -d)
set +e
(
  set -e
  szdet synth "$work/corpus" --patients 6 --minutes 10 --seed 0
  for split in train dev; do
    szdet cache build --config "$config" --data-root "$work/corpus" --split "$split" \
      --out "$work/cache" --workers "$(nproc)"
  done
  start=$(date +%s.%N)
  szdet train --config "$config" --resume false \
    --set paths.data_root="$work/corpus" --set paths.cache_dir="$work/cache" \
    --set paths.runs_dir="$work/runs" --set paths.run_name=gpu-check \
    --set data.expected_recordings={} --set train.device="$device" --set train.epochs=1 \
    --set train.max_steps_per_epoch="$train_steps" --set train.warmup_steps=2 \
    --set train.batch_size="$batch" --set train.num_workers=4 --set tracking.mode=disabled
  "$py" - "$work/runs/gpu-check/metrics.jsonl" "$start" "$out/validation.json" <<'PY'
import json, sys, time
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
summary = {"wall_s": time.time() - float(sys.argv[2]), "rows": rows[-3:]}
open(sys.argv[3], "w").write(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary)[:2000])
PY
) 2>&1 | tee -a "$log"
train_rc=${PIPESTATUS[0]}
set -e
rm -rf "$work"

"$py" - "$out" "$check_rc" "$step_rc" "$train_rc" <<'PY' | tee -a "$log"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def read(name):
    path = out / name
    return json.loads(path.read_text()) if path.exists() else None
summary = {
    "exit_codes": dict(zip(("check_kernels", "train_step", "train_validate"), map(int, sys.argv[2:]))),
    "train_step": read("train_step.json"),
    "validation": read("validation.json"),
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print("== gpu_check exit codes", summary["exit_codes"])
PY
[[ $check_rc -eq 0 && $step_rc -eq 0 && $train_rc -eq 0 ]]
