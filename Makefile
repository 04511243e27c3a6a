# Two commands on a fresh machine: `make demo` (the main job) and `make test` (what CI runs).
# Each creates .venv if missing and builds the extension against the torch installed there.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.14.1
CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
export CUDA_HOME
STAMP := $(VENV)/.metalearn-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/* csrc/*/*)

.PHONY: demo test bench install clean
demo: $(STAMP)
	$(PY) -m metalearn_ext.cli demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run --op all


install: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel ninja
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf build metalearn_ext/*.so *.egg-info
