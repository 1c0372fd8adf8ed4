# SECONDOPINION bridge. The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test stop deps venv lint format clean bench bench-ingest bench-scan bench-deid profile deid-score scrub-score fuzz

demo: deps venv  ## start hospital PACS + reading archive + bridge, push a planted study, show it de-identified
	bash deploy/demo/demo.sh

#: pytest-xdist workers for `make test` (TEST_WORKERS=0: one process, in collection order).
TEST_WORKERS ?= 4

test: deps venv  ## the whole test suite against real Orthanc, dcmtk, SQLite and PostgreSQL
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 1 --durations 15

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

lint: venv  ## ruff, mypy --strict on bridge/, and the layers: no import cycle, no upward import
	$(VENV)/bin/ruff check bridge tests conftest.py deploy bench
	$(VENV)/bin/ruff format --check bridge tests conftest.py deploy bench
	$(VENV)/bin/mypy bridge
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_layers.py

format: venv
	$(VENV)/bin/ruff format bridge tests conftest.py deploy
	$(VENV)/bin/ruff check --fix bridge tests conftest.py deploy

clean: stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

deid-score: deps venv  ## both shared corpora through the engine: headers, burned-in text (both measures), pre-filter recall (docs/deid-score.md)
	$(VENV)/bin/python bench/deid_score.py

scrub-score: venv  ## free-text scrubbing on two sets of planted sentences (docs/scrub-score.md)
	$(VENV)/bin/python bench/scrub_score.py

bench: deps venv  ## the bridge next to Orthanc and dcmtk: ingest, end to end, memory, de-identification, scale-out (docs/bench.md)
	$(VENV)/bin/python bench/run.py
	$(VENV)/bin/python bench/scan.py

bench-ingest: deps venv  ## C-STORE ingest alone: storescp, Orthanc and the bridge, 1 and 4 associations (docs/bench-ingest.md)
	$(VENV)/bin/python bench/ingest.py

bench-scan: deps venv  ## the burned-in text scan: 200-slice CT end to end vs direct, slices/s on 1 and 2 threads (docs/bench-scan.md)
	$(VENV)/bin/python bench/scan.py

profile: deps venv  ## py-spy profile of serve and its worker while a study goes end to end (docs/profile.md)
	$(VENV)/bin/python bench/profile.py

bench-deid: deps venv  ## de-identification throughput with the burned-in scan and on the shared corpus (docs/bench-deid.md)
	$(VENV)/bin/python bench/deid.py

fuzz: venv  ## 10,000 mutated datasets per property through intake and de-identification
	BRIDGE_FUZZ_EXAMPLES=$${BRIDGE_FUZZ_EXAMPLES:-10000} $(VENV)/bin/pytest -q -p no:warnings tests/unit/test_fuzz.py
