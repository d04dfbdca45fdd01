# Two commands on a fresh machine: `make smoke` and `make test`. Everything else is a step of those.
PYTHON ?= python3.11
VENV := .venv
LAUNCH_VENV := .venv-launch
KERNEL_VENV := .venv-kernels
BARE_VENV := .venv-bare
BUNDLE := device-bundle
DEVICE_PYTHON ?= 3.12
BIN := $(VENV)/bin
IMAGE ?= szdet:latest

.PHONY: setup kernel-tools kernel-check device-bundle smoke test test-fast lint bench image lock clean

# The training environment: the package, its pinned dependencies and the test tools.
$(VENV)/.installed: pyproject.toml requirements/train.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/train.txt -e '.[dev]'
	# szcore-evaluation 0.0.7 (the SzCORE scorer the tests check `szdet score` against) declares
	# Python >= 3.12 but runs on 3.11; its dependencies are pinned in the dev extras.
	$(BIN)/python -m pip install -q --no-deps --ignore-requires-python szcore-evaluation==0.0.7
	touch $@

# SkyPilot pins click<8.2 and wandb needs click>=8.2: the launchers get an environment of their own.
$(LAUNCH_VENV)/.installed: requirements/launch.txt
	$(PYTHON) -m venv $(LAUNCH_VENV)
	$(LAUNCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(LAUNCH_VENV)/bin/python -m pip install -q -r requirements/launch.txt
	touch $@

# `szdet check-kernels --interpret`: Triton and the kernels' Python sources, layered over the
# training environment and kept out of it.
$(KERNEL_VENV)/.installed: $(VENV)/.installed requirements/kernels.txt scripts/install_kernel_tools.sh
	scripts/install_kernel_tools.sh $(PYTHON) $(VENV) $(KERNEL_VENV)
	touch $@

# What a bare CUDA machine (torch and Triton, no network) lacks for scripts/gpu_check.sh: pydantic
# wheels for DEVICE_PYTHON (the machine's Python) and the kernels' Python sources, in $(BUNDLE)/.
device-bundle: $(KERNEL_VENV)/.installed
	scripts/device_bundle.sh $(DEVICE_PYTHON) $(KERNEL_VENV) $(BUNDLE)

# Such a machine imitated here, for the GPU check's dry run (tests/device/).
$(BARE_VENV)/.installed: requirements/bare.txt
	$(PYTHON) -m venv $(BARE_VENV)
	$(BARE_VENV)/bin/python -m pip install -q -c requirements/train.txt -r requirements/bare.txt
	touch $@

setup: $(VENV)/.installed $(LAUNCH_VENV)/.installed $(KERNEL_VENV)/.installed $(BARE_VENV)/.installed

kernel-tools: $(KERNEL_VENV)/.installed

# The CUDA training path proven on this CPU at the cloud sizes, and at 8x the batch.
kernel-check: $(KERNEL_VENV)/.installed
	$(KERNEL_VENV)/bin/python -m szdet.cli check-kernels --interpret --config configs/cloud/train.yaml
	$(KERNEL_VENV)/bin/python -m szdet.cli check-kernels --interpret --config configs/cloud/train.yaml \
		--set train.batch_size=512

smoke: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/smoke.sh configs/local/smoke.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold error Dockerfile

# The main suite on both cores: a test file per worker (its module fixtures built once), one
# thread each (two workers of two threads on two cores would fight for them).
test: setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --durations=15 tests \
		--ignore=tests/launch --ignore=tests/kernels --ignore=tests/device
	$(LAUNCH_VENV)/bin/python -m pytest tests/launch
	$(KERNEL_VENV)/bin/python -m pytest tests/kernels
	$(MAKE) device-bundle DEVICE_PYTHON=$$($(BARE_VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	$(BIN)/python -m pytest tests/device

bench: $(VENV)/.installed
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

image:
	docker build --build-arg COMMIT=$$(git rev-parse HEAD) -t $(IMAGE) .

# Re-resolve the pinned sets after changing a dependency in pyproject.toml.
lock: $(VENV)/.installed $(LAUNCH_VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements/train.txt
	$(LAUNCH_VENV)/bin/python -m pip freeze > requirements/launch.txt

clean:
	rm -rf $(VENV) $(LAUNCH_VENV) $(KERNEL_VENV) $(BARE_VENV) $(BUNDLE) runs .mypy_cache .ruff_cache \
		.pytest_cache
