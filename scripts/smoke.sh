#!/usr/bin/env bash
# The main job end to end on built-in synthetic data:
#   synth -> cache build (train, dev) -> verify -> train -> evaluate on dev -> export a detector
#   (operating points calibrated on dev) -> detect one eval EDF at 1 false alarm per 24 h (its
#   .csv_bi and SzCORE events TSV).
# Used by `make smoke` (CPU, configs/local/smoke.yaml) and by the image's `smoke` entrypoint
# (GPU, extra args such as `--set train.device=cuda`, passed on to `szdet train`).
# Usage: scripts/smoke.sh CONFIG [--set key=value ...]   (the --set overrides go to `szdet train`)
set -euo pipefail
config=${1:-configs/local/smoke.yaml}
shift || true
# Every path comes from the resolved config (paths.*), overrides included.
read -r corpus cache run < <(python - "$config" "$@" <<'PY'
import sys
from szdet.config_load import load_config
args = sys.argv[2:]
overrides = [value for flag, value in zip(args, args[1:]) if flag == "--set"]
cfg = load_config(sys.argv[1], overrides)
print(cfg.paths.data_root, cfg.paths.cache_dir, cfg.run_dir)
PY
)
start_s=$SECONDS

echo "== 1/6 synthetic TUSZ-shaped corpus -> $corpus"
rm -rf "$corpus" "$cache" "$run"
szdet synth "$corpus" --patients 10 --minutes 20 --seed 0

echo "== 2/6 cache (train, dev) -> $cache"
for split in train dev; do
  szdet cache build --config "$config" --data-root "$corpus" --split "$split" --out "$cache" --workers 2
done
szdet cache verify "$cache"

echo "== 3/6 train ($config)"
szdet train --config "$config" --resume false "$@"

echo "== 4/6 evaluate best.pt on dev"
szdet evaluate --checkpoint "$run/checkpoints/best.pt" --cache "$cache" --split dev --out "$run/eval-dev"

echo "== 5/6 export best.pt as a detector, its operating points calibrated on dev"
szdet export --checkpoint "$run/checkpoints/best.pt" --cache "$cache" --out "$run/smoke.detector"

echo "== 6/6 detect on an eval-split EDF the model never saw, at 1 false alarm per 24 h"
edf=$(find "$corpus/edf/eval" -name '*.edf' | sort | head -n 1)
szdet detect "$edf" --checkpoint "$run/smoke.detector" --fa-per-24h 1 --out "$run/detect" --plot \
  --format both

python - "$run/eval-dev/metrics.json" <<'PY'
import json, sys
auroc = json.load(open(sys.argv[1]))["auroc"]
print(f"== smoke: dev AUROC {auroc:.3f} (target >= 0.90)")
sys.exit(0 if auroc is not None and auroc >= 0.90 else 1)
PY
echo "== smoke passed in $((SECONDS - start_s)) s. Run directory: $run"
echo "   plots: $run/plots/*.png, $run/eval-dev/*.png, $run/smoke.detector.png; events: $run/detect/"
