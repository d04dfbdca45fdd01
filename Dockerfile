# syntax=docker/dockerfile:1
# One image for every platform: the szdet trainer with mamba_ssm's and causal-conv1d's CUDA kernels.
# SkyPilot (image_id: docker:…), Modal (Image.from_registry / from_dockerfile) and
# `docker run --gpus all --ipc=host IMAGE smoke` all run it. Build: `make image`, or
#   docker build --build-arg COMMIT=$(git rev-parse HEAD) -t szdet:latest .
#
# torch 2.13.0's default PyPI wheel is built for CUDA 13.0 (it requires cuda-toolkit 13.0.x), so the
# kernels are compiled by nvcc 13.0 and the runtime stage sits on the CUDA 13.0 base image.

ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04
ARG UV_VERSION=0.13.8

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- builder: Python 3.11, the pinned environment in /opt/venv, the two kernels compiled --------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS builder
ARG PYTHON_VERSION=3.11
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A standalone CPython (uv's python-build-standalone) at a fixed path, so the venv moves to the
# runtime stage unchanged.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_PREFERENCE=only-managed \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python "${PYTHON_VERSION}" /opt/venv

# Runtime dependencies exactly as pinned for CPU (requirements/train.txt as constraints); torch
# resolves to the CUDA 13.0 build of the same version. einops and transformers are what
# mamba_ssm imports at runtime (its other declared dependencies serve models we do not use).
# pyproject.toml alone (uv reads its dependencies without the README), so a README edit does not
# rebuild the kernels below. The synth extra (pyEDFlib) too: the image's smoke test writes a
# synthetic corpus with `szdet synth`.
COPY pyproject.toml /tmp/szdet/
COPY requirements/train.txt /tmp/szdet/constraints.txt
RUN uv pip install -r /tmp/szdet/pyproject.toml --extra synth -c /tmp/szdet/constraints.txt \
        einops==0.8.2 transformers==5.23.0 setuptools==84.2.1 \
    && python -c "import torch; assert torch.version.cuda.startswith('13.0'), torch.version.cuda"

# The kernels, for A100 (sm_80) and H100/H200 (sm_90) only, compiled and import-checked by the
# script that also builds them natively (its header: parallelism; pins: requirements/kernels.txt).
# Only the script and its pins are copied, before the project, so a code change does not recompile them. Optional build args
# override its defaults; the wheels are dropped once installed.
ARG CAUSAL_CONV1D_VERSION
ARG MAMBA_SSM_VERSION
ARG MAX_JOBS
ARG NVCC_THREADS
COPY scripts/build_kernels.sh /tmp/kernels/scripts/
COPY requirements/kernels.txt /tmp/kernels/requirements/
RUN uv pip install wheel==0.48.0 ninja==1.13.2 \
    && /tmp/kernels/scripts/build_kernels.sh /tmp/wheels \
    && uv pip uninstall wheel ninja \
    && rm -rf /tmp/wheels /tmp/kernels

# --- app: the CUDA base (cudart, driver hooks), the venv, the project; no nvcc, no caches -------
# -base, not -runtime: -runtime adds ~2 GB of CUDA libraries (cuBLAS, cuFFT, cuSPARSE, NCCL, ...)
# that torch's nvidia-* wheels already put in the venv, and torch loads those (its RPATH). The two
# kernels need only libcudart.so.13 and torch's own libraries (readelf -d), all loaded by
# `import torch` first; Triton brings its own ptxas and CUDA headers; libcuda is the driver's.
FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU_VERSION} AS app
ARG VERSION=0.1.0
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="szdet" \
      org.opencontainers.image.description="Seizure detection for scalp EEG (TUSZ): trainer and CUDA kernels" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Triton (mamba_ssm's Mamba-2 kernels) compiles a small C launcher the first time a kernel runs:
# gcc and the C headers are the one toolchain the runtime needs. CA certificates for W&B and S3.
# Versions follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The project last, so a code change rebuilds only these small layers.
WORKDIR /opt/szdet
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build src \
    && szdet --version
COPY configs ./configs
COPY scripts ./scripts

# --- szcore: the SzCORE challenge's detector (esl-epfl/szcore): one EDF in, one events TSV out --
#   docker build --target szcore --build-arg WEIGHTS=weights/sz.detector.pt -t szdet-szcore .
#   docker run --rm --network none -v "$PWD/data:/data:ro" -v "$PWD/out:/output" \
#     -e INPUT=sub-01/ses-01/eeg/sub-01_ses-01_task-szMonitoring_run-00_eeg.edf \
#     -e OUTPUT=sub-01_ses-01_task-szMonitoring_run-00_events.tsv szdet-szcore
# The detector is baked in (the challenge runs it with no network): a bundle `szdet export` wrote
# (its operating points calibrated on dev; it runs at its first FA/24h budget) inside the build
# context, under weights/, the one folder .dockerignore lets a .pt file through.
FROM app AS szcore
ARG WEIGHTS=weights/szcore.pt
COPY ${WEIGHTS} /opt/szdet/weights/szcore.pt
# Refused here, not at the challenge's first run: a training checkpoint, which has no operating
# points and would run at an uncalibrated threshold.
RUN python -m szdet.state.bundle /opt/szdet/weights/szcore.pt
# The challenge's user has no home: scripts/szcore_detect.sh keeps every cache under /tmp.
ENV HOME=/nonexistent
VOLUME ["/data", "/output"]
USER 10001:10001
ENTRYPOINT []
# Shell form, as the challenge asks: its runner passes INPUT and OUTPUT through the environment.
# hadolint ignore=DL3025
CMD /opt/szdet/scripts/szcore_detect.sh

# --- runtime: the training image, the last stage, so `docker build` and Modal build it ---------
FROM app AS runtime
# SkyPilot runs its setup inside the container as root (or through passwordless sudo).
# hadolint ignore=DL3002,DL3066
USER root
ENTRYPOINT ["/opt/szdet/scripts/entrypoint.sh"]
CMD ["help"]
