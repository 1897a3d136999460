# scoutless: `make run` runs the whole pipeline on the embedded archive; `make test` runs the tests.
# Both create the virtual environment and install the pinned dependencies first (with uv: the same
# constraints as pip, resolved and downloaded in parallel, in seconds rather than minutes). The packages are
# compiled to bytecode as they are installed: where Python may not write it (PYTHONDONTWRITEBYTECODE), every
# process would otherwise compile what it imports again (Great Expectations alone: 7.4 s against 3.6 s here).

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8

# The pipeline's commands (scoutless, dvc) come from the virtual environment.
export PATH := $(abspath $(BIN)):$(PATH)
# Telemetry of the tools we drive stays off.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export BENTOML_DO_NOT_TRACK := True
export DO_NOT_TRACK := 1

.PHONY: install run test lint bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt -e ".[dev,mysql]"
	touch $@

run: install
	dvc repro
	scoutless where

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

# Speed and memory, side by side; results in benchmarks/results/. Needs `make run` first (and, for the
# PostgreSQL half of the extraction benchmark, SCOUTLESS_TEST_POSTGRES_URL).
bench: install
	$(BIN)/python -m benchmarks.extract
	$(BIN)/python -m benchmarks.aggregate
	$(BIN)/python -m benchmarks.features
	$(BIN)/python -m benchmarks.training
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.backtest
	$(BIN)/python -m benchmarks.cluster

# Re-pin the whole dependency set after changing pyproject.toml's dependencies.
lock:
	rm -rf $(VENV).lock && $(PYTHON) -m venv $(VENV).lock
	$(VENV).lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV).lock/bin/python -m pip install --quiet ".[dev,oracle,mysql]"
	{ sed -n '1,2p' constraints.txt; $(VENV).lock/bin/python -m pip freeze --all --exclude scoutless --exclude pip; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf $(VENV).lock

clean:
	rm -rf $(VENV) data artifacts reports .bentoml
