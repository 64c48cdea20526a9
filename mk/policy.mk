# Package policy (fetchml_agent/policy/): tests and benchmark. Included by the Makefile ($(PY), venv).
.PHONY: test-policy bench-policy

## test-policy: spec table, schema, engine, scan; the filtering index with a real pip (127.0.0.1 only)
test-policy: venv
	$(PY) -m pytest -q tests/unit/policy tests/integration/index

## bench-policy: 500-line requirements decisions; index page/file latency vs the local upstream
bench-policy: venv
	$(PY) -m benchmarks policy
