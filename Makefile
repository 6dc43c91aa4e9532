# Set-up and the two everyday commands. Each target creates the venv if needed, installs
# torch first (the CPU build, when no torch is importable), then lossatlas with its test extra.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SCALE ?= demo
# the main job: the headline comparison -- ResNet-20 with and without skip connections and the PINN convection beta
# sweep, every method, with reports -- in minutes at the demo scale (8 min 44 s on 2 idle cores from a fresh clone, install included);
# the same at the cpu scale: make demo SCALE=cpu (about 75 min on 2 cores)
BENCHMARKS ?= benchmarks/resnet_skip.toml benchmarks/pinn_convection.toml
# two processes on the CPU share each job (torch.distributed, gloo): ResNet stages 1.4-1.5x one process with one
# thread, where two threads gave a Hessian-vector product 1.33x;
# on a GPU: make demo DEMO_FLAGS="--device cuda"
DEMO_FLAGS ?= --nproc 2 --device cpu
# the four studies a CPU can answer (~45 min at the cpu scale on 2 cores): make studies
STUDIES ?= benchmarks/barcode_lowering.toml benchmarks/barcode_lowering_cnn.toml benchmarks/lr_schedule.toml \
	benchmarks/generalization_grid.toml
PY := $(VENV)/bin/python

.PHONY: venv demo studies test docs docs-serve clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps "curvlinops-for-pytorch>=3"  # see pyproject: without backpack (and its torchvision)
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/lossatlas run $(BENCHMARKS) --scale $(SCALE) --out results $(DEMO_FLAGS)

studies: venv
	$(VENV)/bin/lossatlas run $(STUDIES) --scale cpu --out results

test: venv
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile  # one process a core, one thread each (tests/conftest.py)

# the documentation site into site/, every tutorial executed (--strict: a warning or a failing tutorial fails it)
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) results site .pytest_cache
