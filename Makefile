# Two entry points (see README): `make demo` and `make test`. Both build the venv from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared/data
ARGY   := $(SHARED)/argyrodite_Li6PS5Cl_morgan2021/data/Li6PS5Cl/50p

.PHONY: venv demo test test-all bench clean debian-lammps debian-chromium

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m iondiff_stream.demo --out demo_out

# Debian's `lmp` (LAMMPS with the PYTHON package) for the fix python/invoke tests; installed with apt
# when missing; where apt is unavailable those tests skip and say why.
debian-lammps:
	@if command -v lmp >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq lammps >/dev/null ) \
	    || echo "note: could not install Debian's lammps (apt-get failed): fix python/invoke tests will skip"; \
	else echo "note: apt-get unavailable, Debian's lammps not installed: fix python/invoke tests will skip"; fi

# Debian's headless Chromium, to load report.html and the live page in the tests; installed with apt when
# missing; where apt is unavailable those tests skip and say why.
debian-chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null ) \
	    || echo "note: could not install Debian's chromium (apt-get failed): browser tests will skip"; \
	else echo "note: apt-get unavailable, Debian's chromium not installed: browser tests will skip"; fi

test: venv debian-lammps debian-chromium
	$(PY) -m pytest -q

test-all: venv debian-lammps debian-chromium
	$(PY) -m pytest -q -m "slow or not slow"

bench: venv
	$(PY) benchmarks/hops_speed.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
