#!/usr/bin/env bash
# The image's entrypoint: `docker run [--gpus all] IMAGE COMMAND [ARGS...]`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'TEXT'
usage: IMAGE COMMAND [ARGS...]

  smoke [ARGS...]     check the CUDA kernels, then a short training run on the GPU:
                      on the cache of configs/cloud/smoke.yaml (its paths.cache_dir) if one
                      is mounted there, else synth -> cache -> train -> evaluate on a synthetic
                      corpus (scripts/smoke.sh). ARGS go to `szdet train`, e.g. --set train.epochs=2
  train|evaluate|export|check-kernels|cache|synth|detect|score|config|model-summary ...
                      run that szdet command, e.g. train --config configs/cloud/train.yaml
  gpu-check [ARGS...] scripts/gpu_check.sh: parity, step speed, memory, variants, loader -> $OUT
  help                this text
  anything else       run as given (bash, python ...), so a platform can start its own process

examples (--ipc=host: the loader's workers pass batches through /dev/shm, 64 MB by default):
  docker run --gpus all --ipc=host -v $PWD/cache:/results/cache szdet:latest smoke
  docker run --gpus all --ipc=host szdet:latest check-kernels --require-cuda-kernels
  docker run --gpus all --ipc=host -e OUT=/out -v $PWD/gpu_out:/out szdet:latest gpu-check
TEXT
}

smoke() {
  if ! command -v nvidia-smi >/dev/null; then  # the NVIDIA runtime puts it there with --gpus
    echo "smoke: no GPU in this container: run it with docker run --gpus all --ipc=host (CPU smoke: make smoke)" >&2
    exit 1
  fi
  echo "== smoke: CUDA kernels (mamba_ssm vs the pure-PyTorch path)"
  szdet check-kernels --require-cuda-kernels
  cd "$repo"
  # The cloud smoke config's cache (its paths.cache_dir): used when one is mounted there.
  local mounted_cache
  mounted_cache=$(szdet config --config configs/cloud/smoke.yaml "$@" paths.cache_dir)
  if [[ -f $mounted_cache/train/manifest.json ]]; then
    echo "== smoke: cache found at $mounted_cache -> configs/cloud/smoke.yaml"
    exec szdet train --config configs/cloud/smoke.yaml --resume false "$@"
  fi
  echo "== smoke: no cache at $mounted_cache -> synthetic corpus on the GPU"
  # The CPU smoke config forces the pure Mamba-2; here training runs mamba_ssm's kernels in bf16.
  exec scripts/smoke.sh configs/local/smoke.yaml \
    --set train.device=cuda --set train.precision=bf16 --set model.kernels=auto "$@"
}

command=${1:-help}
case "$command" in
  help | -h | --help) usage ;;
  smoke) shift; smoke "$@" ;;
  gpu-check) shift; exec "$repo/scripts/gpu_check.sh" "$@" ;;
  train | evaluate | export | check-kernels | cache | synth | detect | score | config | model-summary | --version)
    exec szdet "$@" ;;
  *) exec "$@" ;;
esac
