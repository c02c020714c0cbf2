# The two commands:  make demo  (the default sweep, locally, on CPU)   make test  (the test suite)
# Each sets up .venv first when it is missing (torch 2.13.0 first, then ssmpipe with its test extras, at the
# versions of requirements.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench experiments slurm-profile clean-results

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores 2 --configfile config/config.yaml
	@echo "ssmpipe: demo report: $(CURDIR)/results/demo/report/index.html"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/dag_scale.py

# `snakemake --profile slurm` looks for the profile in Snakemake's profile folder: link ours there.
SNAKEMAKE_PROFILES := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
slurm-profile:
	mkdir -p "$(SNAKEMAKE_PROFILES)"
	ln -sfn "$(CURDIR)/profiles/slurm" "$(SNAKEMAKE_PROFILES)/slurm"
	@echo "ssmpipe: $(SNAKEMAKE_PROFILES)/slurm -> $(CURDIR)/profiles/slurm"

# Every experiment of config/papers.yaml in one DAG at its small scale (SCALE=paper for the papers' sizes), then
# the reproduction page results/papers/index.html.
SCALE ?= small
experiments: $(VENV)/.installed
	$(BIN)/snakemake --cores 2 --configfile config/papers.yaml --config scale=$(SCALE)
