# Nomad runtime, job templates and the Nomad API double (included by the Makefile).
.PHONY: test-nomad bench-nomad golden-nomad

test-nomad: venv  ## unit + integration tests of the nomad runtime (against the double, or FETCHML_TEST_NOMAD_ADDR)
	$(PY) -m pytest tests/unit/nomad tests/integration/nomad

bench-nomad: venv  ## render throughput, create overhead, 500 workspaces listed
	$(PY) -m benchmarks nomad

golden-nomad:  ## regenerate tests/golden/nomad after reviewing a template change
	FETCHML_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/unit/nomad/test_nomad_render.py
