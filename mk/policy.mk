# Package policy (fetchml_agent/policy/): tests and benchmark. Included by the Makefile.
PYTHON ?= python3

.PHONY: test-policy bench-policy

## test-policy: spec table, schema, engine, scan; the filtering index with a real pip (127.0.0.1 only)
test-policy:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m pytest tests/unit/policy tests/integration/index -q

## bench-policy: 500-line requirements decisions; index page/file latency vs the local upstream
bench-policy:
	PYTHONPATH=$(CURDIR) $(PYTHON) benchmarks/bench_policy.py
