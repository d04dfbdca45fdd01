#!/usr/bin/env bash
# The one prepared GPU check: minutes on a GPU turned into the figures we need, in one Python
# process that writes $OUT/gpu_check.json after every stage (src/szdet/gpu_check/): the machine,
# fused-vs-pure parity under bf16, the trainer's step (windows/s, compile seconds, memory, MFU,
# launch audit), per-component times, the speed variants, the DataLoader. Ends inside ~8 minutes
# at the cloud config (--budget-s); a stage that cannot run says why and the next one goes on.
#
# Runs in the image as is, and on a bare CUDA machine with torch and Triton but without pydantic,
# mamba_ssm or causal_conv1d: `make device-bundle` fills device-bundle/ with what it lacks
# (pydantic wheels for its Python, the kernels' Python sources); carry that folder along.
#
# Usage: scripts/gpu_check.sh [--device cuda|cpu] [--config configs/cloud/train.yaml] [--batch N]
#                             [--steps N] [--budget-s S] [--workers N] ...  (python -m szdet.gpu_check -h)
# On a CPU (CI): scripts/gpu_check.sh --device cpu --config configs/local/smoke.yaml --workers 2
#   (tiny sizes; the parity stage runs the Triton kernels under the interpreter).
# Python: $PYTHON, else .venv/bin/python, else python3. Output: $OUT (default ./gpu_out):
# gpu_check.json and gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-./gpu_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -n ${PYTHON:-} ]]; then py=$PYTHON
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# On a CPU the Triton kernels run in the interpreter, which Triton reads when it loads.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --device=cpu || (${args[i]} == --device && ${args[i + 1]:-} == cpu) ]]; then
    export TRITON_INTERPRET=1
  fi
done

"$py" -m szdet.gpu_check --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
