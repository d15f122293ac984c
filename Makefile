# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test fuzz bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,test]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p "$${EVENTSVC_DATA_DIR:-./data}"
	$(BIN)/gunicorn --config python:eventsvc.gunicorn_conf wsgi:app

test: $(STAMP)
	$(BIN)/pytest

# Bench-only extras (the eventsourcing peer) go into the same venv; the table lands in bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest --timeout=0 tests/test_fuzz.py
	SCHEMATHESIS_EXAMPLES=1000 $(BIN)/pytest --timeout=0 tests/test_openapi_conformance.py
