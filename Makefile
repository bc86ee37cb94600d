# Tally: `make run` serves the API, `make test` runs the whole suite.
# Both create .venv, install, and build the Cython modules first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXT    := fastpath/.built

.PHONY: run test bench bench-micro bench-baseline bench-compare load wrk install-bench lint install build clean

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

# Benchmarks and load tests (README "Performance"); none of them runs in `make test`.
# The extra tools (locust, py-spy, pyinstrument) come from the `bench` extra.
BENCH_STAMP := $(VENV)/.bench-installed
MICRO       := $(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
               --benchmark-storage=file://benchmarks/results/micro

install-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

# wrk from the distribution's packages (never a downloaded binary).
wrk:
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

# The HTTP ratio harness: `make bench BENCH_ARGS=--quick` finishes in under 2 minutes.
bench: install wrk
	$(PY) -m benchmarks.http $(BENCH_ARGS)

# pytest-benchmark: compiled fastpath modules against their twins, and the hot helpers.
bench-micro: install
	$(MICRO) --benchmark-autosave $(PYTEST_ARGS)

# Save the reference run that bench-compare compares against.
bench-baseline: install
	$(MICRO) --benchmark-save=baseline $(PYTEST_ARGS)

# Fails when a benchmark's mean is more than 10 % slower than the saved baseline.
bench-compare: install
	$(PY) -m benchmarks.micro_compare $(PYTEST_ARGS)

# Mixed traffic with locust against a Tally the target starts (or LOAD_HOST's).
LOAD_ARGS ?= --users 50 --spawn-rate 10 --duration 60s
load: install-bench
	$(PY) -m loadtests $(LOAD_ARGS)

lint: install
	$(VENV)/bin/ruff check service fastpath tests benchmarks
	$(VENV)/bin/ruff format --check service fastpath tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf build $(EXT) fastpath/*.c fastpath/*.so *.egg-info
