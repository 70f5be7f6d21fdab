# The two-command promise: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test services lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

services:
	@deploy/ensure-services.sh

demo: $(STAMP) services
	$(VENV)/bin/innkeeper demo

test: $(STAMP) services
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) services
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) run .run .mypy_cache .ruff_cache .pytest_cache
