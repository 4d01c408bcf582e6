# Everything runs in .venv, made from the project's own files with python3 alone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BACKEND ?= asyncio
BENCH_ARGS ?= --fast

.PHONY: check test typecheck demo bench clean

$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

check: test typecheck

test: $(VENV)/.test
	$(PY) -m pytest

# The stubs hide the inline types from mypy, so each is checked on its own;
# stubtest then proves the two agree.
typecheck: $(VENV)/.test
	$(PY) -m mypy src/anygate
	MYPYPATH=stubs $(PY) -m mypy tests examples
	MYPYPATH=stubs $(PY) -m mypy.stubtest anygate

demo: $(VENV)/.test
	$(PY) examples/graceful_server.py --backend $(BACKEND)

bench: $(VENV)/.bench
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) dist build .mypy_cache .pytest_cache .hypothesis
