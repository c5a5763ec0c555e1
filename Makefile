# The two commands of the README: `make demo` and `make test`.
# Both create (or refresh) .venv from pyproject.toml first, with the versions in
# constraints.txt (known to pass); nothing else needs installing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
PIP_VERSION := 26.3
LATEST := .venv-latest

.PHONY: demo test lint bench clean test-latest constraints

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "pip==$(PIP_VERSION)"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

# The newest release of every dependency, in a virtual environment of its own.
$(LATEST)/.installed: pyproject.toml
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q -e ".[test]"
	touch $@

# The suite against the newest releases (constraints.txt not used, .venv untouched).
test-latest: $(LATEST)/.installed
	$(LATEST)/bin/python -m pytest -q

# Refresh constraints.txt from the newest releases; then `make test` and commit it.
constraints: $(LATEST)/.installed
	head -n 3 $(CONSTRAINTS) > $(CONSTRAINTS).new
	$(LATEST)/bin/python -m pip freeze --exclude-editable | grep -v '^tomostream' >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

demo: $(STAMP)
	$(VENV)/bin/tomostream demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check tomostream tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_recon.py

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info
