#!/usr/bin/env bash
# The main job end to end on built-in synthetic data:
#   synth -> cache build (train, dev) -> verify -> train -> evaluate on dev -> export a detector
#   (operating points calibrated on dev) -> detect one eval EDF at 1 false alarm per 24 h (its
#   .csv_bi and SzCORE events TSV).
# Used by `make smoke` (CPU, configs/local/smoke.yaml) and by the image's `smoke` entrypoint
# (GPU, extra args such as `--set train.device=cuda`).
# Usage: scripts/smoke.sh CONFIG [--set key=value ...]
# Every command that reads the config gets it with the overrides and reads its paths.* itself;
# evaluate and export take the run's own config.yaml, which train wrote with the overrides applied
# (their checkpoint: the run's best.pt; evaluate's output: the run's eval-dev/).
set -euo pipefail
config=${1:-configs/local/smoke.yaml}
shift || true
# The script itself needs the paths only to start clean, to name the corpus `szdet synth` writes
# (it has no config) and to find what the commands wrote: `szdet config` prints them.
paths=$(szdet config --config "$config" "$@" paths.data_root paths.cache_dir run_dir)
{ read -r corpus; read -r cache; read -r run; } <<<"$paths"
start_s=$SECONDS

echo "== 1/6 synthetic TUSZ-shaped corpus -> $corpus"
rm -rf "$corpus" "$cache" "$run"
szdet synth "$corpus" --patients 10 --minutes 20 --seed 0

echo "== 2/6 cache (train, dev) -> $cache"
for split in train dev; do
  szdet cache build --config "$config" "$@" --split "$split" --workers 2
done
szdet cache verify "$cache"

echo "== 3/6 train ($config)"
szdet train --config "$config" --resume false "$@"

echo "== 4/6 evaluate best.pt on dev -> $run/eval-dev (the smoke's target: AUROC >= 0.90)"
szdet evaluate --config "$run/config.yaml" --split dev --min-auroc 0.90

echo "== 5/6 export best.pt as a detector, its operating points calibrated on dev"
detector=$run/smoke.detector
szdet export --config "$run/config.yaml" --out "$detector"

echo "== 6/6 detect on an eval-split EDF the model never saw, at 1 false alarm per 24 h"
edf=$(find "$corpus/edf/eval" -name '*.edf' | sort | head -n 1)
szdet detect "$edf" --checkpoint "$detector" --fa-per-24h 1 --out "$run/detect" --plot --format both

echo "== smoke passed in $((SECONDS - start_s)) s. Run directory: $run"
echo "   plots: $run/plots/*.png, $run/eval-dev/*.png, $detector.png; events: $run/detect/"
