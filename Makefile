# `make demo` and `make test` work on a fresh machine: each creates .venv, installs, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU PyTorch for `maivar convert-weights` and its parity test (the `convert` extra).
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/synthetic.yaml
PYTEST_ARGS ?=

.PHONY: install demo test lint clean bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install '$(TORCH_SPEC)'
	$(PY) -m pip install -e '.[dev,convert]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/maivar demo --config $(CONFIG)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_predict.py

clean:
	rm -rf data runs export
