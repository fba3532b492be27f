# Two commands on a fresh machine:  `make run` (install + start the dashboard)  and  `make test` (install + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test browser bench install loadtest

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

# Chromium renders PNG/PDF exports (kaleido) and drives the browser end-to-end test.
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium fonts-dejavu-core; }

run: $(VENV)/.installed
	-@command -v chromium >/dev/null 2>&1 || echo "note: PNG/PDF export needs Chromium (make browser); SVG/CSV/JSON and the chart toolbar work without it"
	$(PY) -m streamlit run dashboard/app.py --browser.gatherUsageStats false

test: $(VENV)/.installed browser
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/issue9.py

# K simulated visitors (Chromium pages) against a loopback server: results correct / errors / time to first chart / RSS
loadtest: $(VENV)/.installed browser
	$(PY) -m benchmarks.loadtest --visitors $(or $(VISITORS),8)
