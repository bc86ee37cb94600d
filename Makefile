# Tally: `make run` serves the API, `make test` runs the whole suite.
# Both create .venv, install, and build the Cython modules first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXT    := fastpath/.built

.PHONY: run test bench load lint install build clean

install: $(STAMP) $(EXT)

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel 'Cython>=3.0'
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

$(EXT): $(STAMP) $(wildcard fastpath/*.pyx) setup.py
	$(PY) setup.py -q build_ext --inplace
	@touch $@

build: $(EXT)

run: install
	TALLY_ENV=$${TALLY_ENV:-dev} $(VENV)/bin/tally dev

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) -m pytest -q benchmarks $(PYTEST_ARGS)
	$(PY) -m benchmarks.transfers_ratio

load: install
	$(PY) -m pip install -q --disable-pip-version-check 'locust>=2.20'
	$(PY) -m locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8000

lint: install
	$(VENV)/bin/ruff check service fastpath tests benchmarks
	$(VENV)/bin/ruff format --check service fastpath tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf build $(EXT) fastpath/*.c fastpath/*.so *.egg-info
