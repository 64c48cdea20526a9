# FetchML Jupyter — the two commands a newcomer needs: `make dev-up` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: help dev-up dev-down venv venv-ansible test test-unit test-integration bench lint lint-python clean

help:
	@echo "make dev-up     set up .venv, start the agent (local runtime) and configure ml"
	@echo "make dev-down   stop the workspaces and the agent that dev-up started"
	@echo "make test       run the test suite (unit, integration; docker tests when Docker runs)"
	@echo "make bench      run the benchmarks and print ratios against their baselines"
	@echo "make lint       ruff (with a complexity bar), mypy, the import layers (lint-imports), the Ansible GitOps checks"
	@echo "make collection the Ansible collection fetchml.platform (build/collection/*.tar.gz)"
	@echo "make plan INVENTORY=inventories/staging   what a run would change, per host (drift: fail on any)"

# venv: the package with the `dev` extra (enough for make test). venv-ansible adds the `ansible`
# extra (yamllint, ansible-lint, molecule) for make lint and make molecule; scripts/dev.sh keeps the
# extras already installed and reinstalls only what is missing.
venv:
	@scripts/dev.sh venv

venv-ansible:
	@EXTRAS=dev,ansible scripts/dev.sh venv

dev-up:
	@scripts/dev.sh up

dev-down:
	@scripts/dev.sh down

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -q tests/unit

bench: venv
	$(PY) -m benchmarks

lint-python: venv
	$(PY) -m ruff check fetchml_agent fetchml fetchml_jupyter tests benchmarks scripts
	$(PY) -m mypy fetchml_agent
	$(VENV)/bin/lint-imports

lint: lint-python

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info

-include mk/*.mk
