# step-deploy: set-up, demo and tests. Everything a fresh clone needs is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.step-deploy-installed
TSTAMP := $(VENV)/.step-deploy-test-installed
DEMO   := runs/demo
# test processes (pytest-xdist): one per core; a test file stays on one process (its module fixtures are built once);
# files start in collection order, longest first (tests/conftest.py LONGEST_FILES), not xdist's most-tests-first
JOBS   ?= auto

.PHONY: setup setup-test demo test test-fast clean

setup: $(STAMP)

# the test runner and the field's counters used as test oracles (NeuroBench, SpikingJelly): only for tests
setup-test: $(TSTAMP)

$(TSTAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e ".[backends,oracles,test]"
	touch $(TSTAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e ".[backends]"
	# lava-nc 0.10.0 declares Python < 3.11; its real needs are in our pins, and
	# step_deploy.exporters.lava_compat fixes its one 3.11 incompatibility at import time.
	$(PY) -m pip install --quiet --no-compile --no-deps --ignore-requires-python lava-nc==0.10.0
	touch $(STAMP)

demo: setup
	$(VENV)/bin/step-train --arch spikformer-2-64-digits --data digits --epochs 8 --qat-epochs 2 -o $(DEMO)/model.ckpt --reuse
	$(VENV)/bin/step-export $(DEMO)/model.ckpt --target loihi -o $(DEMO)/loihi --run-lava 4
	$(VENV)/bin/step-export $(DEMO)/model.ckpt --target fpga -o $(DEMO)/fpga --csim 4
	$(VENV)/bin/step-parity $(DEMO)/model.ckpt --limit lava=2,csim=64 -o $(DEMO)/parity
	@echo "summary: $(DEMO)/loihi/summary.md; report: $(DEMO)/loihi/report.md (T, chip features, accuracy, Lava parity, energy, simulated latency: sim.md); constraints: $(DEMO)/loihi/constraints.md"
	@echo "FPGA: $(DEMO)/fpga/README.md (HLS project: make csim, vitis_hls -f build_prj.tcl); report: $(DEMO)/fpga/report.md (accuracy, C-simulation parity per layer, resource/latency estimates, energy, simulated latency: sim.md)"
	@echo "parity matrix of all stages: $(DEMO)/parity/parity.html (parity.md, matrix.png, raster.png, rates.png)"

test: setup-test
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder

test-fast: setup-test
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder -m "not slow"

clean:
	rm -rf $(VENV) runs build *.egg-info
