# Two commands do everything: `make demo` and `make test`. Each builds .venv on first use.
# Bring your own PyTorch build with e.g. `make demo TORCH_SPEC="torch==2.5.1"`
# (the default pins the CPU wheel already present on the development machines).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
DEMO_CONFIG ?= configs/demo.yaml
PY_DIRS := cli pipeline stages store tests benchmarks $(wildcard *.py)

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]" "$(TORCH_SPEC)"
	touch $(STAMP)

demo: $(STAMP)
	@echo "vidlat demo: the whole pipeline on synthetic sprites into $(DEMO_DIR) (replaced if present)"
	rm -rf $(DEMO_DIR)
	$(BIN)/vidlat data synth --config $(DEMO_CONFIG) --out $(DEMO_DIR)/videos.zarr
	$(BIN)/vidlat inspect $(DEMO_DIR)/videos.zarr
	$(BIN)/vidlat train-ae --config $(DEMO_CONFIG) --data $(DEMO_DIR)/videos.zarr --out $(DEMO_DIR)/ae
	$(BIN)/vidlat encode --config $(DEMO_CONFIG) --data $(DEMO_DIR)/videos.zarr --ae $(DEMO_DIR)/ae --out $(DEMO_DIR)/latents.zarr
	$(BIN)/vidlat inspect $(DEMO_DIR)/latents.zarr --verify
	$(BIN)/vidlat train-predictor --config $(DEMO_CONFIG) --latents $(DEMO_DIR)/latents.zarr --out $(DEMO_DIR)/predictor
	$(BIN)/vidlat generate --config $(DEMO_CONFIG) --ae $(DEMO_DIR)/ae --predictor $(DEMO_DIR)/predictor --data $(DEMO_DIR)/videos.zarr --out $(DEMO_DIR)/generated
	@echo
	@echo "Done. Look at:"
	@echo "  $(DEMO_DIR)/generated/grid.png      truth and predicted rows per video"
	@echo "  $(DEMO_DIR)/generated/gifs/         one GIF per video: observed | truth | prediction"
	@echo "  $(DEMO_DIR)/generated/metrics.json  MSE, PSNR, SSIM per future step"
	@echo "  $(DEMO_DIR)/ae/samples/             stage-1 reconstructions and content/pose swaps"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

clean:
	rm -rf $(VENV) runs build dist *.egg-info
