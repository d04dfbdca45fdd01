# Two commands on a fresh machine: `make smoke` and `make test`. Everything else is a step of those.
PYTHON ?= python3.11
VENV := .venv
LAUNCH_VENV := .venv-launch
BIN := $(VENV)/bin
IMAGE ?= szdet:latest

.PHONY: setup smoke test test-fast lint bench image lock clean

# The training environment: the package, its pinned dependencies and the test tools.
$(VENV)/.installed: pyproject.toml requirements/train.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/train.txt -e '.[dev]'
	touch $@

# SkyPilot pins click<8.2 and wandb needs click>=8.2: the launchers get an environment of their own.
$(LAUNCH_VENV)/.installed: requirements/launch.txt
	$(PYTHON) -m venv $(LAUNCH_VENV)
	$(LAUNCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(LAUNCH_VENV)/bin/python -m pip install -q -r requirements/launch.txt
	touch $@

setup: $(VENV)/.installed $(LAUNCH_VENV)/.installed

smoke: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/smoke.sh configs/local/smoke.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold error Dockerfile

test: setup lint
	$(BIN)/python -m pytest tests --ignore=tests/launch
	$(LAUNCH_VENV)/bin/python -m pytest tests/launch

bench: $(VENV)/.installed
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

image:
	docker build --build-arg COMMIT=$$(git rev-parse HEAD) -t $(IMAGE) .

# Re-resolve the pinned sets after changing a dependency in pyproject.toml.
lock: $(VENV)/.installed $(LAUNCH_VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements/train.txt
	$(LAUNCH_VENV)/bin/python -m pip freeze > requirements/launch.txt

clean:
	rm -rf $(VENV) $(LAUNCH_VENV) runs .mypy_cache .ruff_cache .pytest_cache
