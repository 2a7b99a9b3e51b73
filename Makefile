# Two commands do everything: `make demo` and `make test`. Each builds .venv on first use.
# Bring your own PyTorch build with e.g. `make demo TORCH_SPEC="torch==2.5.1"`
# (the default pins the CPU wheel already present on the development machines).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
PY_DIRS := cli pipeline stages store tests

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]" "$(TORCH_SPEC)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vidlat data synth --out $(DEMO_DIR)/videos.zarr --videos 64 --frames 32 --size 64 --seed 0 --overwrite
	$(BIN)/vidlat inspect $(DEMO_DIR)/videos.zarr

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

clean:
	rm -rf $(VENV) runs build dist *.egg-info
