# FetchML Jupyter — the two commands a newcomer needs: `make dev-up` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: help dev-up dev-down venv test test-unit test-integration bench lint lint-python clean

help:
	@echo "make dev-up     set up .venv, start the agent (local runtime) and configure ml"
	@echo "make dev-down   stop the workspaces and the agent that dev-up started"
	@echo "make test       run the test suite (unit, integration; docker tests when Docker runs)"
	@echo "make bench      run the benchmarks and print ratios against their baselines"
	@echo "make lint       ruff (with a complexity bar), mypy, the import layers (lint-imports), the Ansible GitOps checks"

venv:
	@scripts/dev.sh venv

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
	$(PY) -m ruff check fetchml_agent fetchml tests benchmarks
	$(PY) -m mypy fetchml_agent
	$(VENV)/bin/lint-imports

lint: lint-python

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info

-include mk/*.mk
