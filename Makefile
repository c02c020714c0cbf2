# The two commands:  make demo  (the default sweep, locally, on CPU)   make test  (the test suite)
# Each sets up .venv first when it is missing (torch 2.13.0 first, then ssmpipe with its test extras).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean-results

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores 2 --configfile config/config.yaml
	@echo "ssmpipe: demo report: $(CURDIR)/results/demo/report/index.html"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/dag_scale.py
