# SECONDOPINION bridge. The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test stop deps venv lint format clean bench

demo: deps venv  ## start hospital PACS + reading archive + bridge, push a planted study, show it de-identified
	bash deploy/demo/demo.sh

test: deps venv  ## the whole test suite against real Orthanc, dcmtk, SQLite and PostgreSQL
	$(VENV)/bin/pytest

stop:  ## stop the demo's services
	bash deploy/demo/stop.sh

deps:  ## Debian packages: orthanc, orthanc-dicomweb, dcmtk (installed only if missing)
	bash deploy/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: venv  ## ruff and mypy --strict on bridge/
	$(VENV)/bin/ruff check bridge tests conftest.py deploy bench
	$(VENV)/bin/ruff format --check bridge tests conftest.py deploy bench
	$(VENV)/bin/mypy bridge

format: venv
	$(VENV)/bin/ruff format bridge tests conftest.py deploy
	$(VENV)/bin/ruff check --fix bridge tests conftest.py deploy

clean: stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

bench: deps venv  ## end-to-end wall time vs a direct storescu into Orthanc (writes docs/bench-e2e.md)
	$(VENV)/bin/python bench/e2e.py
