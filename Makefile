# The README's two commands are `make demo` and `make test`; each sets up .venv first when needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-from-lock
UV_PIN := $(shell grep -E '^uv==' requirements.lock)
PYTEST_ARGS ?=

.PHONY: setup demo test bench release lint clean

setup: $(STAMP)

# One resolver call from the lock file, bytecode compiled (this machine sets PYTHONDONTWRITEBYTECODE).
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(UV_PIN)
	$(UV) pip install --python $(PY) --compile-bytecode --quiet -r requirements.lock
	$(UV) pip install --python $(PY) --no-deps --no-build-isolation --quiet -e .
	@touch $@

demo: setup
	$(VENV)/bin/mlops-levels demo

# Figures of solvers that stop early move with the BLAS kernel and thread count: the whole suite
# runs with two OpenBLAS threads, then the tests marked `figures` run again with one (about 15 s;
# pytest's exit code 5 means that PYTEST_ARGS selected none of them).
test: setup
	OPENBLAS_NUM_THREADS=2 $(PY) -m pytest -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS)
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS) -m figures || [ $$? -eq 5 ]

bench: setup
	$(PY) -m benchmarks

lint: setup
	$(VENV)/bin/ruff check .

release: setup
	$(PY) -m level2_devops.release

clean:
	rm -rf .workbook build dist *.egg-info .pytest_cache
