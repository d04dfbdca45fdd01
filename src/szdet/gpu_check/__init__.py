"""The GPU check: what a few minutes on a GPU must tell us, measured in one process.

``scripts/gpu_check.sh`` runs ``python -m szdet.gpu_check``. It fits the image and a bare CUDA
machine alike: on one without pydantic, mamba_ssm or causal_conv1d, ``make device-bundle``
carries them (bundle.py). Stages, each one key of ``$OUT/gpu_check.json``, written after every
stage so that a command cut at its time limit still returns what it measured:

0. ``environment``: GPU, SMs, memory, driver, torch / Triton / CUDA, /dev/shm, which kernels load;
1. ``parity``: the fused Mamba-2 path (mamba_ssm's Triton SSD kernels) against the pure path at
   a training batch's row counts, under bf16 autocast (under Triton's interpreter on a CPU);
2. ``train_step``: the trainer's own step at the config's batch: windows/s, first-step compile
   and autotune seconds, peak memory, MFU against the detected GPU's bf16 peak, then the launch
   audit of one more step;
3. ``components``: forward+backward time of the TCN, node stream, edge stream and graph stage,
   and the PE's eigendecomposition alone;
4. ``variants``: the speed variants (variants.py), each timed as in stage 2;
5. ``loader``: the training DataLoader's windows/s over a cache written with numpy.

A stage that cannot run holds ``{"skipped": "<one-line reason>"}`` instead of numbers. This
package imports nothing beyond torch at import time: the bundle must be on the path first.
"""
