# Two entry points (see README): `make demo` and `make test`. Both build the venv from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared/data
ARGY   := $(SHARED)/argyrodite_Li6PS5Cl_morgan2021/data/Li6PS5Cl/50p

.PHONY: venv demo test test-all bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m iondiff_stream.demo --out demo_out

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

bench: venv
	$(PY) benchmarks/hops_speed.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
