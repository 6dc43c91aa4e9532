# Set-up and the two everyday commands. Each target creates the venv if needed, installs
# torch first (the CPU build, when no torch is importable), then lossatlas with its test extra.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SCALE ?= cpu
# the main job: the four studies a CPU can answer (~45 min at cpu scale on 2 cores); the PINN sweep
# (~14 min) and the ResNet-20 skip study (over an hour): make demo BENCHMARKS="benchmarks/pinn_convection.toml ..."
BENCHMARKS ?= benchmarks/barcode_lowering.toml benchmarks/barcode_lowering_cnn.toml benchmarks/lr_schedule.toml \
	benchmarks/generalization_grid.toml
PY := $(VENV)/bin/python

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps "curvlinops-for-pytorch>=3"  # see pyproject: without backpack (and its torchvision)
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/lossatlas run $(BENCHMARKS) --scale $(SCALE) --out results

test: venv
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile  # one process a core, one thread each (tests/conftest.py)

clean:
	rm -rf $(VENV) results .pytest_cache
