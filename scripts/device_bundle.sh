#!/usr/bin/env bash
# `make device-bundle`: what a bare CUDA machine (torch and Triton, no network) lacks for the GPU
# check and the model's fused path, in one git-ignored folder (src/szdet/gpu_check/bundle.py):
#   BUNDLE/pyX.Y/*.whl   manylinux wheels of pydantic and its dependencies for Python X.Y, at the
#                        versions requirements/train.txt pins
#   BUNDLE/kernels/      mamba_ssm's and causal_conv1d's Python sources at requirements/kernels.txt's
#                        pins, copied from the kernel tools' environment (make kernel-tools)
# Nothing is downloaded on the GPU machine. At most 40 MiB.
# Usage: scripts/device_bundle.sh DEVICE_PYTHON KERNEL_VENV BUNDLE   (e.g. 3.12 .venv-kernels device-bundle)
set -euo pipefail
cd "$(dirname "$0")/.."
device_python=$1 kernel_venv=$2 bundle=$3
max_mib=40

wheels=$bundle/py$device_python
rm -rf "$wheels" "$bundle/kernels"
mkdir -p "$wheels" "$bundle/kernels"
"$kernel_venv/bin/python" -m pip download -q --only-binary=:all: --dest "$wheels" \
  --python-version "$device_python" --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --constraint requirements/train.txt pydantic

site=$("$kernel_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for package in mamba_ssm causal_conv1d; do
  cp -r "$site/$package" "$bundle/kernels/"
done
find "$bundle/kernels" -name __pycache__ -type d -prune -exec rm -rf {} +

size_kib=$(du -sk "$bundle" | cut -f1)
echo "device bundle: $bundle ($((size_kib / 1024)) MiB):" "$wheels"/*.whl
if ((size_kib > max_mib * 1024)); then
  echo "device_bundle.sh: $bundle is over $max_mib MiB" >&2
  exit 1
fi
