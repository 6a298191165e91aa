# posmon — `make test` and `make demo` create .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck check schema bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m collector.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check agent collector protocol tests bench
	$(VENV)/bin/ruff format --check agent collector protocol tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# one command that runs all checks
check: lint typecheck test

# regenerate the checked-in JSON Schema after changing protocol types
schema: $(STAMP)
	$(PY) -m protocol.schema --write

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/agent_footprint.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
