#!/usr/bin/env bash
# The SzCORE detector contract (the Dockerfile's `szcore` target runs this as its CMD):
# read the EDF at /data/$INPUT, write its HED-SCORE events TSV to /output/$OUTPUT.
#
#   INPUT=sub-01/ses-01/eeg/x_eeg.edf OUTPUT=sub-01/ses-01/eeg/x_events.tsv szcore_detect.sh
#
# The challenge runs the image as UID 10001 with HOME=/nonexistent, /data read-only and no
# network, so everything written goes to a private folder under /tmp and the weights are the
# image's own: a detector bundle (`szdet export`), never a training checkpoint, which would run at
# an uncalibrated threshold. Optional arguments DATA_DIR OUTPUT_DIR DETECTOR replace /data, /output
# and the baked-in detector: the tests run this script outside Docker with them.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data_dir=${1:-/data}
output_dir=${2:-/output}
detector=${3:-$repo/weights/szcore.pt}

: "${INPUT:?INPUT is not set: the EDF to read, relative to $data_dir}"
: "${OUTPUT:?OUTPUT is not set: the TSV to write, relative to $output_dir}"
input=$data_dir/$INPUT
output=$output_dir/$OUTPUT
if [[ ! -f $input ]]; then
  echo "szcore: $input: no such EDF file (INPUT=$INPUT)" >&2
  exit 1
fi
if [[ -d $output ]]; then  # refused before any work, not after it
  echo "szcore: $output: is a folder, not the events TSV to write (OUTPUT=$OUTPUT)" >&2
  exit 1
fi

python -m szdet.state.bundle "$detector"  # one line and exit 1 for anything but a detector

work=$(mktemp -d "${TMPDIR:-/tmp}/szcore.XXXXXX")
tmp=$output.$$.tmp
trap 'rm -rf "$work" "$tmp"' EXIT
# HOME is not writable: matplotlib's, Triton's, numba's (XDG_CACHE_HOME) and any other cache live and
# die with this run (numba then compiles the CPU Mamba-2 loop once per run: ~4 s).
export XDG_CACHE_HOME=$work/cache MPLCONFIGDIR=$work/matplotlib TRITON_CACHE_DIR=$work/triton
export MNE_DONTWRITE_HOME=true

szdet detect "$input" --checkpoint "$detector" --format szcore --out "$work/events"
written=("$work"/events/*_events.tsv)
# A half-copied TSV must never sit under the name the scorer reads: a temporary beside it, renamed
# over it (-T: never into a folder of that name), and on any failure one line and no temporary.
if ! { mkdir -p "$(dirname "$output")" && cp "${written[0]}" "$tmp" && mv -T "$tmp" "$output"; } \
  2>"$work/place.err"; then
  echo "szcore: $output: cannot write the events TSV ($(head -n 1 "$work/place.err"))" >&2
  exit 1
fi
echo "szcore: $input -> $output"
