# The two commands of the README: `make demo` and `make test`.
# Both create (or refresh) .venv from pyproject.toml first; nothing else needs installing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tomostream demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check tomostream tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_recon.py

clean:
	rm -rf $(VENV) build *.egg-info
