# her2lib — the two commands of the README, plus helpers. Every target is idempotent.
#   make reproduce   build the embedded cohort and regenerate reports/default/ (all notebooks, default profile)
#   make test        lint (ruff), unit tests and doctests, one end-to-end run of the smoke profile
#   make three-class the HER2-zero / -low / -positive question -> reports/three_class/ (same as PROFILE=three_class)
#   make lab         JupyterLab on notebooks/ with the project's `her2lib` kernel (LAB_ARGS="..." adds options)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.her2lib-installed
# The project's Jupyter kernel: this venv's python, registered in the venv (--sys-prefix), so JupyterLab offers it
# as "Python 3 (her2lib)" and the notebooks' kernelspec names it.
KERNEL := $(VENV)/share/jupyter/kernels/her2lib/kernel.json
LAB_ARGS ?=
PROFILE ?= default

.PHONY: install reproduce test lab smoke paper three-class bench clean-reports strip lint

install: $(STAMP) $(KERNEL)

$(STAMP): pyproject.toml requirements-lock.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "her2lib needs Python 3.11; set PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint requirements-lock.txt --editable ".[test,distributed]"
	$(PY) -c "import torch, timm, monai, her2lib; print('her2lib environment ready: torch', torch.__version__)"
	touch $(STAMP)

$(KERNEL): $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name her2lib --display-name "Python 3 (her2lib)"

reproduce: $(STAMP)
	$(PY) -m her2lib.runner --profile $(PROFILE)

smoke: $(STAMP)
	$(PY) -m her2lib.runner --profile smoke

paper: $(STAMP)
	$(PY) -m her2lib.runner --profile paper

# The three-class HER2 question (zero / low / positive) at the default profile's CPU size -> reports/three_class/
three-class: $(STAMP)
	$(PY) -m her2lib.runner --profile three_class

test: $(STAMP) $(KERNEL)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

# Jupyter refuses to run as root without --allow-root; containers often run as root, so pass it there and say so.
# tests/test_lab.py runs this very target (with VENV, LAB_ARGS and a temporary Jupyter home of its own).
lab: $(STAMP) $(KERNEL)
	@if [ "$$(id -u)" = 0 ]; then echo "make lab: running as root (container?): passing --allow-root to jupyter lab"; \
	  root=--allow-root; else root=; fi; \
	set -x; exec $(VENV)/bin/jupyter lab $$root --MappingKernelManager.default_kernel_name=her2lib $(LAB_ARGS) notebooks/

bench: $(STAMP)
	$(PY) benchmarks/bench_delong.py
	$(PY) benchmarks/bench_train_loop.py
	$(PY) benchmarks/bench_executors.py
	$(PY) benchmarks/bench_gradcam.py
	$(PY) benchmarks/bench_cpu_kernels.py

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

strip: $(STAMP)
	$(PY) -m her2lib.runner.nbstrip notebooks/*.ipynb

clean-reports:
	rm -rf reports/smoke reports/default
