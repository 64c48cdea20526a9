# Packages through the agent (fetchml_agent/service/packages.py, cli/packages.py): tests and benchmark.
# Included by the Makefile ($(PY), venv). Everything runs on 127.0.0.1 against a local index of tiny wheels.
.PHONY: test-packages bench-packages

## test-packages: real ml + agent + workspaces: install/block/transitive, notebook pip, approvals, env overrides
test-packages: venv
	$(PY) -m pytest -q tests/unit/test_packages_store.py tests/unit/test_packages_service.py tests/integration/packages

## bench-packages: `ml jupyter install WS sixish` vs plain `pip install sixish` from the same upstream
bench-packages: venv
	$(PY) -m benchmarks packages
