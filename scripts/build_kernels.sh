#!/usr/bin/env bash
# mamba_ssm's and causal-conv1d's CUDA kernels for A100 (sm_80) and H100/H200 (sm_90) only: download
# the pinned sdists, compile them into wheels, install those into the Python environment and check
# that they import. The Dockerfile's builder stage runs it; it runs natively as well (README).
#
# Usage: scripts/build_kernels.sh [WHEEL_DIR]   (else $WHEEL_DIR, else ./kernel-wheels; kept)
# Environment: PYTHON (default: python on PATH), with the CUDA build of torch, setuptools, wheel,
#   ninja and packaging (built without isolation, against that torch), and einops and transformers
#   (mamba_ssm imports them); CUDA_HOME, the toolkit itself (default /usr/local/cuda: torch's
#   cpp_extension otherwise derives it from `nvcc` on PATH, which may be a wrapper elsewhere);
#   CAUSAL_CONV1D_VERSION, MAMBA_SSM_VERSION; MAX_JOBS and NVCC_THREADS (default: from nproc).
set -euo pipefail

# The pins live in requirements/kernels.txt (`# sources:`), shared with `make kernel-tools`.
pins=$(sed -n 's/^# sources: //p' "$(dirname "$0")/../requirements/kernels.txt")
pinned() { sed -n "s/.*$1==\([^ ]*\).*/\1/p" <<<"$pins"; }
CAUSAL_CONV1D_VERSION=${CAUSAL_CONV1D_VERSION:-$(pinned causal-conv1d)}
MAMBA_SSM_VERSION=${MAMBA_SSM_VERSION:-$(pinned mamba-ssm)}
[[ -n $CAUSAL_CONV1D_VERSION && -n $MAMBA_SSM_VERSION ]] || { echo "build_kernels.sh: no pins" >&2; exit 1; }
wheels=${1:-${WHEEL_DIR:-./kernel-wheels}}
py=${PYTHON:-python}
started=$(date +%s)

die() { echo "build_kernels.sh: $*" >&2; exit 1; }
seconds() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
megabytes() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

command -v "$py" >/dev/null || die "no Python '$py' (set PYTHON)"
py=$(command -v "$py")
# ninja, and the pip that builds, are the ones next to that Python.
PATH="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
[[ -x $CUDA_HOME/bin/nvcc && -f $CUDA_HOME/include/cuda_runtime.h ]] \
  || die "CUDA_HOME=$CUDA_HOME is not a CUDA toolkit (no bin/nvcc or include/cuda_runtime.h)"
"$py" -c 'import setuptools, wheel, packaging' 2>/dev/null \
  || die "$py lacks setuptools, wheel or packaging (the sdists build without isolation)"
command -v ninja >/dev/null || die "no ninja next to $py (without it torch compiles serially)"
torch_cuda=$("$py" -c 'import torch; print(torch.__version__, torch.version.cuda or "none")') \
  || die "$py cannot import torch"
[[ $torch_cuda != *" none" ]] \
  || die "torch ${torch_cuda% none} is a CPU build: the kernels need its CUDA build"
nvcc_release=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')

# ninja runs MAX_JOBS nvcc at once, each compiling its file's two architectures on NVCC_THREADS
# threads: together they fill the cores, where upstream's fixed 4 x --threads 4 oversubscribes.
cores=$(nproc)
NVCC_THREADS=${NVCC_THREADS:-$((cores >= 2 ? 2 : 1))}
MAX_JOBS=${MAX_JOBS:-$((cores / NVCC_THREADS > 0 ? cores / NVCC_THREADS : 1))}
export MAX_JOBS TORCH_CUDA_ARCH_LIST="8.0;9.0" CAUSAL_CONV1D_FORCE_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
echo "== build_kernels: torch $torch_cuda, nvcc $nvcc_release ($CUDA_HOME), $cores cores:" \
  "MAX_JOBS=$MAX_JOBS NVCC_THREADS=$NVCC_THREADS, wheels to $wheels"

mkdir -p "$wheels"
wheels=$(cd "$wheels" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download --no-cache-dir --no-deps --no-binary :all: --no-build-isolation -q \
  -d "$work/sdist" "causal-conv1d==$CAUSAL_CONV1D_VERSION" "mamba-ssm==$MAMBA_SSM_VERSION"
for archive in "$work"/sdist/*.tar.gz; do tar -xzf "$archive" -C "$work"; done

# Both setup.py files hard-code a long list of -gencode pairs (beside TORCH_CUDA_ARCH_LIST's) and
# `--threads 4`: every other pair becomes `pass`, and an upstream change fails here, loudly.
for setup in "$work"/*/setup.py; do
  sed -i -E '/cc_flag\.append\("-gencode"\)/{N;/compute_(75|87|1[0-9][0-9]),/s/^( *).*/\1pass/}' "$setup"
  ! grep -Eq 'compute_(75|87|1[0-9][0-9]),' "$setup" || die "$setup: a -gencode pair is left"
  grep -q 'arch=compute_80,code=sm_80' "$setup" || die "$setup: no sm_80 pair"
  grep -q 'arch=compute_90,code=sm_90' "$setup" || die "$setup: no sm_90 pair"
  grep -q '"--threads", "4"' "$setup" || die "$setup: no --threads 4 to replace"
  sed -i "s/\"--threads\", \"4\"/\"--threads\", \"$NVCC_THREADS\"/" "$setup"
done

summary=()
built=()
for pkg in causal_conv1d-"$CAUSAL_CONV1D_VERSION" mamba_ssm-"$MAMBA_SSM_VERSION"; do
  t0=$(date +%s)
  log=$wheels/build-${pkg%%-*}.log
  rm -f "$wheels/$pkg"-*.whl
  echo "== $pkg: compiling (full log: $log)"
  set +e
  # -v so ninja's [done/total] lines (and errors) show progress; everything else goes to the log.
  "$py" -m pip wheel --no-cache-dir --no-deps --no-build-isolation -v -w "$wheels" "$work/$pkg" 2>&1 \
    | tee "$log" | { grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]|error' | cut -c1-160 || true; }
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then tail -n 60 "$log" >&2; die "$pkg: pip wheel failed ($rc)"; fi
  wheel=$(compgen -G "$wheels/$pkg-*.whl") || die "$pkg: no wheel in $wheels"
  built+=("$wheel")
  summary+=("$pkg: $(seconds $(($(date +%s) - t0))), $(basename "$wheel") $(megabytes "$wheel")")
  echo "== ${summary[-1]}"
done

"$py" -m pip install --no-cache-dir --no-deps --force-reinstall -q "${built[@]}"
# The Mamba-2 kernels are Triton's, imported here too: no GPU is needed to import any of them.
sofiles=$("$py" -c '
import torch, causal_conv1d_cuda, selective_scan_cuda, mamba_ssm.ops.triton.ssd_combined
print(causal_conv1d_cuda.__file__, selective_scan_cuda.__file__)')
echo "== imported causal_conv1d_cuda, selective_scan_cuda, mamba_ssm.ops.triton.ssd_combined"

# sm_80 and sm_90 machine code only, no PTX (nothing to JIT, nothing for other GPUs), where a
# cuobjdump is at hand: the toolkit's, else the one Triton bundles.
cuobjdump=$CUDA_HOME/bin/cuobjdump
[[ -x $cuobjdump ]] || cuobjdump=$("$py" -c '
import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))')
if [[ -x $cuobjdump ]]; then
  for so in $sofiles; do
    archs=$("$cuobjdump" --list-elf "$so" | sed -n 's/.*\.\(sm_[0-9a-z]*\)\.cubin$/\1/p' | sort -u | xargs)
    ptx=$("$cuobjdump" --list-ptx "$so" 2>/dev/null | wc -l)
    [[ $archs == "sm_80 sm_90" && $ptx -eq 0 ]] || die "$so: ELF for '$archs', $ptx PTX files"
    echo "== $(basename "$so"): ELF $archs, no PTX"
  done
else
  echo "== no cuobjdump: architectures not checked"
fi

for line in "${summary[@]}"; do echo "== $line"; done
echo "== total $(seconds $(($(date +%s) - started))), wheels in $wheels"
