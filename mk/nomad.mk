# Nomad runtime, job templates and the Nomad API double (included by the Makefile).
.PHONY: test-nomad bench-nomad golden-nomad

test-nomad:  ## unit + integration tests of the nomad runtime (against the double, or FETCHML_TEST_NOMAD_ADDR)
	PYTHONPATH=$(CURDIR) python3 -m pytest tests/unit/nomad tests/integration/nomad

bench-nomad:  ## render throughput, create overhead, 500 workspaces listed
	PYTHONPATH=$(CURDIR) python3 benchmarks/bench_nomad.py

golden-nomad:  ## regenerate tests/golden/nomad after reviewing a template change
	FETCHML_UPDATE_GOLDEN=1 PYTHONPATH=$(CURDIR) python3 -m pytest -q tests/unit/nomad/test_nomad_render.py
