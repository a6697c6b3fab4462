# Two commands do all set-up: `make demo` runs the workflow on the embedded demo
# dataset, `make test` runs every check CI runs. See README.md.
PYTHON ?= python3
VENV := .venv
MXNET_VENV := .venv-mxnet
DALI_VENV := .venv-dali
CORES ?= 2
SNAKEMAKE := $(VENV)/bin/snakemake

.PHONY: demo test lint dry-run pytest bench clean venv mxnet-venv dali-venv chromium

venv: $(VENV)/.installed
mxnet-venv: $(MXNET_VENV)/.installed
dali-venv: $(DALI_VENV)/.installed

# The Python versions `make test` is run with (README.md, Requirements).
SUPPORTED_PYTHONS := 3.11 3.12 3.13
CHECK_PYTHON := $(PYTHON) -c 'import sys; version = "%d.%d" % sys.version_info[:2]; \
	sys.exit(None if version in "$(SUPPORTED_PYTHONS)".split() else f"Python $(SUPPORTED_PYTHONS) supported, {sys.executable} is {version}")'

$(VENV)/.installed: requirements.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# The MXNet test oracle: mxnet 1.9.1 (the last release) with the numpy names it imports
# restored (requirements-mxnet.txt says why --no-deps); it needs the GNU OpenMP and quad-math
# runtimes from Debian.
$(MXNET_VENV)/.installed: requirements-mxnet.txt
	dpkg -s libgomp1 libquadmath0 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libgomp1 libquadmath0; }
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(MXNET_VENV)
	$(MXNET_VENV)/bin/pip install --quiet --no-deps -r requirements-mxnet.txt
	PYTHONPATH=tests/mxnet_oracle $(MXNET_VENV)/bin/python -c 'import mxnet_numpy_compat, mxnet'
	touch $@

# DALI, a test client: its reader of the rec output runs on the CPU.
$(DALI_VENV)/.installed: requirements-dali.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(DALI_VENV)
	$(DALI_VENV)/bin/pip install --quiet -r requirements-dali.txt
	$(DALI_VENV)/bin/python -c 'import nvidia.dali'
	touch $@

demo: $(VENV)/.installed
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --report report.html

# The report test renders report.html in headless Chromium (Debian's package).
chromium:
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

lint: $(VENV)/.installed
	$(VENV)/bin/snakefmt --check .
	$(SNAKEMAKE) --lint

dry-run: $(VENV)/.installed
	$(SNAKEMAKE) -n --quiet rules

# Every test runs: one that lacks a tool fails instead of skipping (tests/machine.py).
pytest: $(VENV)/.installed $(MXNET_VENV)/.installed $(DALI_VENV)/.installed chromium
	FACEPREP_REQUIRE_ALL=1 $(VENV)/bin/python -m pytest

test: lint dry-run pytest

# Speed and memory against the original MXNet/TF scripts and tar -x (see README.md).
bench: $(VENV)/.installed $(MXNET_VENV)/.installed
	$(VENV)/bin/python bench/run_bench.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/packing.py $(PACKING_ARGS)
	$(VENV)/bin/python bench/audit.py --rec bench/work/packing/data/rec $(AUDIT_ARGS)

clean:
	rm -rf .snakemake resources results logs benchmarks report.html
