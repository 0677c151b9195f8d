# Two commands a new machine needs: `make run` and `make test`. Only Python is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench screenshots clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)  ## the portal with embedded defaults: SQLite, filesystem broker, moto server, worker, web
	$(PY) manage.py run_embedded

lint: $(STAMP)  ## ruff (lint + format), mypy and the import layers (settings in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The suite in two passes (conftest.py's --suite-pass), each given PYTEST_ARGS:
# 1. the in-process tests (moto inside the test process, the test client) on one pytest-xdist process
#    per core, each with its own test database, Redis database, var/ folder and free ports;
# 2. the `reliability` and `browser` tests (worker processes, servers, Chromium) one at a time, as
#    before. Not beside other tests, not even as one xdist group beside them: on 2 cores one of them
#    keeps both cores busy, several depend on time (runs swept as stale after 3-4 s without a
#    heartbeat) and one restarts the Redis server, emptying every worker's database.
test: $(STAMP) lint  ## ruff, mypy, Django checks, migrations up to date, the whole pytest suite
	DEBUG=true $(PY) manage.py check
	DEBUG=true $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest --suite-pass=parallel -n auto $(PYTEST_ARGS)
	$(PY) -m pytest --suite-pass=serial $(PYTEST_ARGS)

bench: $(STAMP)  ## benchmarks (not part of make test)
	$(PY) -m bench

screenshots: $(STAMP)  ## PNGs of the main pages into docs/screenshots/ (real Chromium)
	$(PY) -m pytest portal/tests/browser -m browser -k screenshots --screenshots

clean:
	rm -rf $(VENV) var staticfiles
