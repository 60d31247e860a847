# Set-up and everyday commands. `make demo` and `make test` each build the virtual environment first.
PYTHON ?= python3
# The CPU build lies on this project's machines; on a GPU machine pick the build you need,
# e.g. `make install TORCH=torch` (pip's default CUDA build).
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test models clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create .venv with liquidgen and its test dependencies

demo: install  ## train the tiny LiquidGen on the bundled digits (CPU, a few minutes) and sample a grid
	$(BIN)/liquidgen train configs/digits-liquid-tiny.yaml --out runs/demo --overwrite
	$(BIN)/liquidgen sample runs/demo --out runs/demo/samples.png

test: install  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q

models: install  ## table of backbone presets and parameter counts
	$(BIN)/liquidgen models

clean:
	rm -rf $(VENV) runs .pytest_cache
