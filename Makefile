# Set-up and the two everyday commands. Each target creates the venv if needed, installs
# torch first (the CPU build, when no torch is importable), then lossatlas with its test extra.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SCALE ?= cpu
PY := $(VENV)/bin/python

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/lossatlas run benchmarks/resnet_skip.toml benchmarks/pinn_convection.toml --scale $(SCALE) --out results

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache
