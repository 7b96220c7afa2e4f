# `make demo` and `make test` work on a fresh machine: each creates .venv, installs, then runs.
# Config values are overridden per run with `--set`, e.g.
#   make demo DEMO_ARGS="--set train.video.epochs=30 --set extract.batch_size=8"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU PyTorch for `maivar convert-weights` and its parity test (the `convert` extra).
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/synthetic.yaml
PYTEST_ARGS ?=
# pytest-xdist workers: one per core (`auto`); PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= auto
DEMO_ARGS ?=

.PHONY: install demo test test-fast lint clean bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install '$(TORCH_SPEC)'
	$(PY) -m pip install -e '.[dev,convert]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/maivar demo --config $(CONFIG) $(DEMO_ARGS)

# The whole suite, end-to-end tests included (what CI runs).
test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=25 $(PYTEST_ARGS)

# Everything but the end-to-end (`slow`) tests.
test-fast: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/bench_render.py
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_costs.py
	$(PY) benchmarks/bench_selection.py
	$(PY) benchmarks/bench_backbones.py --jit off --fold both
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_beam_features.py
	$(PY) benchmarks/bench_train_e2e.py

clean:
	rm -rf data runs export
