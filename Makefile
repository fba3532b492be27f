# Two commands on a fresh machine:  `make run` (install + start the dashboard)  and  `make test` (install + tests).
# `make run` serves this machine only (127.0.0.1); `make serve` (= HOST=0.0.0.0 make run) serves a class on every
# interface. PORT=8502 picks the port for both. The upload limit (MiB per file) is the app's own, in
# dashboard/own_model.py: .streamlit/config.toml and `gdlab dashboard` give Streamlit the same number.
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8501
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run serve test test-all browser bench install loadtest notebook

# pip byte-compiles all ~16,000 files it installs (52 s of 85 s here); --no-compile, then the ~4,400 modules this
# project and its tests import are compiled by importing them (tools/compile_used_modules.py, ~16 s).
$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) tools/compile_used_modules.py
	touch $@

install: $(VENV)/.installed

# Chromium renders PNG/PDF exports (kaleido) and drives the browser end-to-end test.
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium fonts-dejavu-core; }

run: $(VENV)/.installed
	-@command -v chromium >/dev/null 2>&1 || echo "note: PNG/PDF export needs Chromium (make browser); SVG/CSV/JSON and the chart toolbar work without it"
	$(PY) -m streamlit run dashboard/app.py --server.address $(HOST) --server.port $(PORT) \
		--browser.gatherUsageStats false

# Every interface: for a class or a shared server (the host limits in the README apply to every visitor).
serve:
	$(MAKE) run HOST=0.0.0.0

# The tests in TEST_JOBS worker processes (pytest-xdist), each test file whole on one worker (its module fixtures
# built once), the files in collection order: the longest first (tests/conftest.py). One worker per core plus one:
# the tests wait on browsers and fresh processes, and on 2 cores 3 workers took 194-200 s against 214-216 s for 2
# (two runs each, alternating). TEST_JOBS=0: every test in this one process, one after another.
TEST_JOBS ?= $(shell python3 -c 'import os; print((os.cpu_count() or 1) + 1)')
PYTEST := $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

test: $(VENV)/.installed browser
	$(PYTEST)

# The same plus the slow checks (RUN_SLOW=1: every Atlas preset end to end, minutes more).
test-all: $(VENV)/.installed browser
	RUN_SLOW=1 $(PYTEST)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/bench_engine_vs_fused.py

# K simulated visitors (Chromium pages) against a loopback server: results correct / errors / time to first chart / RSS
loadtest: $(VENV)/.installed browser
	$(PY) -m benchmarks.loadtest --visitors $(or $(VISITORS),8) $(if $(SCENARIOS),--scenarios $(SCENARIOS)) $(if $(RAY),--ray $(RAY))

# The example notebook run headless from its own folder (examples/) with this venv's kernel; the executed copy, with
# every output, is written beside it. To work in it: jupyter lab examples/quickstart.ipynb (pip install jupyterlab).
notebook: $(VENV)/.installed
	$(VENV)/bin/jupyter execute examples/quickstart.ipynb --output=quickstart-executed
	@echo "executed copy: examples/quickstart-executed.ipynb"
