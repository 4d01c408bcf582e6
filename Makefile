# Everything runs in .venv, made from the project's own files with python3 alone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BACKEND ?= asyncio
BENCH_ARGS ?= --fast

.PHONY: check test typecheck lint verifytypes demo bench clean

$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

check: test typecheck lint verifytypes

test: $(VENV)/.test
	$(PY) -m pytest

# The stubs hide the inline types from mypy, so each is checked on its own;
# stubtest then proves the two agree.
typecheck: $(VENV)/.test
	$(PY) -m mypy src/anygate
	MYPYPATH=stubs $(PY) -m mypy tests examples
	MYPYPATH=stubs $(PY) -m mypy.stubtest anygate

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# What users install is the wheel, with the stubs inside: check that, in a
# virtual environment of its own, for 100% type completeness.
WHEEL_ENV := build/verify
verifytypes: $(VENV)/.test
	rm -rf $(WHEEL_ENV)
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_ENV)/dist .
	$(PYTHON) -m venv $(WHEEL_ENV)/venv
	$(WHEEL_ENV)/venv/bin/python -m pip install --quiet $(WHEEL_ENV)/dist/*.whl
	cd $(WHEEL_ENV) && VIRTUAL_ENV=$(CURDIR)/$(WHEEL_ENV)/venv PATH=$(CURDIR)/$(WHEEL_ENV)/venv/bin:$$PATH \
		$(CURDIR)/$(VENV)/bin/basedpyright --verifytypes anygate --ignoreexternal

demo: $(VENV)/.test
	$(PY) examples/graceful_server.py --backend $(BACKEND)

bench: $(VENV)/.bench
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) dist build .mypy_cache .pytest_cache .hypothesis
