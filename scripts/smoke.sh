#!/usr/bin/env bash
# The main job end to end on built-in synthetic data: synth -> cache build -> verify.
# (Training and evaluation join this chain as they land.) Used by `make smoke` and the image's
# `smoke` entrypoint. Usage: scripts/smoke.sh CONFIG
set -euo pipefail
config=${1:-configs/local/smoke.yaml}
work=runs/smoke
corpus=$work/corpus
cache=$work/cache

echo "== szdet smoke: synthetic corpus -> cache -> verify (config $config)"
rm -rf "$work"
szdet synth "$corpus" --patients 10 --minutes 20 --seed 0
for split in train dev; do
  szdet cache build --config "$config" --data-root "$corpus" --split "$split" --out "$cache" --workers 2
done
szdet cache verify "$cache"
echo "== smoke: training and evaluation are not in this build yet; the data chain above passed."
