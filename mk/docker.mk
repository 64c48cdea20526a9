# Docker runtime: images, tests with the real engine, benchmarks. Included by the Makefile.
# Needs root, a running dockerd (see .ci/run) and nftables.

.PHONY: images test-docker bench-docker

images:  ## build the base and workspace images (cached: a no-op when up to date)
	bash images/build.sh

test-docker: venv images  ## docker runtime and firewall tests against the real engine
	$(PY) -m pytest -m docker tests/integration/docker tests/unit/netpolicy

bench-docker: venv images  ## create->ready vs bare docker run, firewall apply, 20 workspaces listed
	$(PY) -m benchmarks docker
