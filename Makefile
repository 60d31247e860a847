# Set-up and everyday commands. `make demo` and `make test` each build the virtual environment first.
PYTHON ?= python3
# The CPU build lies on this project's machines; on a GPU machine pick the build you need,
# e.g. `make install TORCH=torch` (pip's default CUDA build).
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test models clean

# Two stages, so that the demo installs only what it runs (torch, liquidgen, scikit-learn's digits) and the
# test dependencies (diffusers, sentence-transformers, datasets, tensorboard) come with `make test`.
$(VENV)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)" -e ".[digits]"
	touch $@

$(VENV)/.installed: $(VENV)/.demo
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create .venv with liquidgen and its test dependencies

demo: $(VENV)/.demo  ## train the tiny LiquidGen on the bundled digits (CPU, about 3 minutes) and sample a grid
	$(BIN)/liquidgen train configs/digits-liquid-tiny.yaml --out runs/demo --overwrite
	$(BIN)/liquidgen sample runs/demo --cfg 2 --out runs/demo/samples.png  # the eye's pick; FD's best is the config's 1.0

test: install  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q

models: install  ## table of backbone presets and parameter counts
	$(BIN)/liquidgen models

clean:
	rm -rf $(VENV) runs .pytest_cache
