#!/usr/bin/env bash
# `make kernel-tools`: the environment of `szdet check-kernels --interpret` (.venv-kernels).
# It layers Triton and the Python sources of mamba_ssm and causal-conv1d over the training
# environment, which stays free of them (a CPU install never imports a CUDA kernel package).
# Usage: scripts/install_kernel_tools.sh PYTHON TRAIN_VENV KERNEL_VENV
set -euo pipefail
cd "$(dirname "$0")/.."
python=$1 train_venv=$2 venv=$3
requirements=requirements/kernels.txt

"$python" -m venv "$venv"
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
site=$(purelib "$venv")
# torch, szdet and the rest come from the training environment (its .pth files included).
echo "import site; site.addsitedir('$(cd "$(purelib "$train_venv")" && pwd)')" >"$site/szdet-train-env.pth"
"$venv/bin/python" -m pip install -q -r "$requirements"

# The kernels' setup.py builds CUDA code (or downloads a build): take the sdists' Python packages.
read -r -a sources <<<"$(sed -n 's/^# sources: //p' "$requirements")"
sdists=$(mktemp -d)
trap 'rm -rf "$sdists"' EXIT
MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE "$venv/bin/python" -m pip download \
  -q --no-deps --no-binary :all: --no-build-isolation -d "$sdists" "${sources[@]}"
for archive in "$sdists"/*.tar.gz; do tar -xzf "$archive" -C "$sdists"; done
for package in mamba_ssm causal_conv1d; do
  rm -rf "${site:?}/$package"
  cp -r "$sdists"/*/"$package" "$site/"
done
"$venv/bin/python" -c 'import triton, szdet; from szdet.kernel_proof.shims import cpu_kernels
with cpu_kernels(): pass
print("kernel tools ready: triton", triton.__version__)'
