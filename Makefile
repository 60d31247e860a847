# Set-up and everyday commands. `make demo` and `make test` each build the virtual environment first.
PYTHON ?= python3
# The CPU build lies on this project's machines; on a GPU machine pick the build you need,
# e.g. `make install TORCH=torch` (pip's default CUDA build).
TORCH ?= torch==2.13.0
# the Triton whose interpreter `make test-kernels` was checked with
TRITON ?= triton==3.9.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-kernels models clean

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

# Triton runs its kernels on CPU tensors when TRITON_INTERPRET=1: the fused ops are checked against the PyTorch
# reference without a GPU (about 2 minutes on 2 cores). Not part of `make test`: triton is a 290 MB wheel.
test-kernels: install  ## the Triton kernels' tests on the CPU, under Triton's interpreter (installs triton)
	$(BIN)/pip install -q "$(TRITON)"
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q tests/test_liquid_kernels.py tests/test_group_norm_kernel.py \
		tests/test_depthwise_kernel.py

models: install  ## table of backbone presets and parameter counts
	$(BIN)/liquidgen models

clean:
	rm -rf $(VENV) runs .pytest_cache
