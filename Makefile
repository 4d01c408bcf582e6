# Everything runs in .venv, made from the project's own files with python3 alone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BACKEND ?= asyncio
BENCH_ARGS ?=

.PHONY: check test typecheck lint verifytypes docs doctest demo bench dist matrix python-ft python-sid postgres stubs clean

$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

check: test typecheck lint verifytypes docs doctest

# tests/test_postgres.py starts a PostgreSQL server of its own: `make postgres`
# provides the binaries first (see below).
test: $(VENV)/.test postgres
	$(PY) -m pytest

# The stubs hide the inline types from mypy, so each is checked on its own;
# stubtest then proves the two agree, and stub_docs that their docstrings do.
typecheck: $(VENV)/.test
	$(PY) -m mypy src/anygate
	MYPYPATH=stubs $(PY) -m mypy tests examples benchmarks
	MYPYPATH=stubs $(PY) -m mypy docs
	MYPYPATH=stubs $(PY) -m mypy.stubtest anygate
	$(PY) tools/stub_docs.py --check

# The stubs' docstrings are copied from the implementation, never edited by hand.
stubs: $(VENV)/.test
	$(PY) tools/stub_docs.py

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# What users install is the wheel, with the stubs inside: check that, in a
# virtual environment of its own, for 100% type completeness and documentation.
WHEEL_ENV := build/verify
verifytypes: $(VENV)/.test
	rm -rf $(WHEEL_ENV)
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_ENV)/dist .
	$(PYTHON) -m venv $(WHEEL_ENV)/venv
	$(WHEEL_ENV)/venv/bin/python -m pip install --quiet $(WHEEL_ENV)/dist/*.whl
	cd $(WHEEL_ENV) && VIRTUAL_ENV=$(CURDIR)/$(WHEEL_ENV)/venv PATH=$(CURDIR)/$(WHEEL_ENV)/venv/bin:$$PATH \
		$(CURDIR)/$(VENV)/bin/basedpyright --verifytypes anygate --ignoreexternal --outputjson \
		> $(CURDIR)/$(WHEEL_ENV)/types.json || true
	$(PY) tools/check_type_report.py $(WHEEL_ENV)/types.json

# The site, in docs/_build/html: warnings are errors (-W, all of them reported
# with --keep-going) and every cross-reference must resolve (-n). Offline: the
# intersphinx inventories are committed (see docs/conf.py).
DOCS_OUT := docs/_build/html
docs: $(VENV)/.test
	$(VENV)/bin/sphinx-build -W --keep-going -n -q -b html docs $(DOCS_OUT)
	@echo "docs built: $(DOCS_OUT)/index.html"

# Every Python code block in the docs runs, on each backend (docs/conftest.py).
doctest: $(VENV)/.test
	$(PY) -m pytest docs

demo: $(VENV)/.test
	$(PY) examples/graceful_server.py --backend $(BACKEND)

# Interleaved ratios with their verdicts; about 4 minutes on 2 cores. Try the
# script out with BENCH_ARGS=--quick, or one part with BENCH_ARGS="--section holds".
bench: $(VENV)/.bench
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

dist: $(VENV)/.test
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# The test suite on each supported Python, each in its own environment with the
# wheel installed. One pyenv interpreter of each version goes on the PATH, where
# nox looks for python3.X; a version missing there is reported, loudly, as not tested.
# The free-threaded 3.13 (`make python-ft`) goes last, as its bin directory also
# holds a python3.13 that must not stand in for the GIL build. A 3.14 or 3.15
# that neither pyenv nor the system has comes from `make python-sid`'s chroot
# (see noxfile.py). MATRIX_ARGS go to pytest in every session, e.g.
# MATRIX_ARGS="-x --timeout=60".
MATRIX := build/matrix
MATRIX_ARGS ?=
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
# The bin of the newest pyenv release of a version (3.14), or of its
# free-threaded build (3.13t), compared as numbers: 3.14.10 after 3.14.9.
pyenv_newest = $(lastword $(shell ls -d $(PYENV_ROOT)/versions/$(1).*/bin 2>/dev/null \
	| grep -E '/[0-9.]+$(2)/bin$$' | sort -V))
MATRIX_BINS := $(foreach v,3.10 3.11 3.12 3.13 3.14 3.15,$(call pyenv_newest,$(v)))
MATRIX_BINS += $(call pyenv_newest,3.13,t) $(call pyenv_newest,3.14,t)
empty :=
space := $(empty) $(empty)
matrix: $(VENV)/.test postgres
	rm -rf $(MATRIX)
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(MATRIX) .
	PATH=$(subst $(space),:,$(MATRIX_BINS)):$$PATH $(VENV)/bin/nox --report $(MATRIX)/report.json \
		$(if $(MATRIX_ARGS),-- $(MATRIX_ARGS)); \
		status=$$?; $(PY) tools/matrix_summary.py $(MATRIX)/report.json; exit $$status

# A free-threaded CPython 3.13 for `make matrix`: reuses an installed pyenv
# 3.13.*t, or builds one (see the script for where its source comes from).
python-ft:
	bash tools/python_ft.sh

# CPython 3.14 and 3.15 for `make matrix`, from Debian sid's packages, in a
# chroot in ~/.cache/anygate/python-sid (or $$PYTHON_SID) that every clone reuses.
# Needs root and apt; see the script.
python-sid:
	bash tools/python_sid.sh

# PostgreSQL's initdb and postgres, for tests/test_postgres.py: the installed
# Debian package's, or else Debian's packages fetched with apt-get download and
# unpacked in ~/.cache/anygate/postgres (/var/cache/anygate/postgres as root),
# which every clone reuses. No root needed, nothing installed on the system;
# about 20 s the first time, then well under a second. See the script.
postgres:
	bash tools/postgres.sh

clean:
	rm -rf $(VENV) dist build .mypy_cache .pytest_cache .hypothesis .nox docs/_build
