# The Ansible suite: GitOps checks (make lint), plugin tests, molecule scenarios. Included by the
# Makefile (VENV, PY, venv). The tools come from the venv's `ansible` extra (EXTRAS=dev,ansible).
ABIN := $(VENV)/bin
ANSIBLE_ENV := ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg PATH=$(abspath $(ABIN)):$$PATH
TOOLS_PATH := PATH=$(abspath $(ABIN)):$$PATH
INVENTORIES := $(sort $(wildcard inventories/*/hosts.yml))
PLAYBOOKS := $(sort $(wildcard playbooks/*.yml))
ROLES := common docker nvidia_gpu nomad network_policy fetchml_agent workspace_images
SYSTEMD_IMAGE ?= fetchml/ansible-systemd:bookworm

.PHONY: lint-ansible test-ansible molecule molecule-deps wheelhouse systemd-image $(addprefix molecule-,$(ROLES)) molecule-cluster

lint: lint-ansible

## lint-ansible: yamllint, ansible-lint (production profile), --syntax-check of every playbook against
## every inventory, ansible-inventory --graph, and the inventory schema check
lint-ansible: venv
	@echo "--- yamllint"
	@$(ABIN)/yamllint -s roles playbooks inventories .config .yamllint .ansible-lint
	@echo "--- ansible-lint (production profile)"
	@$(ANSIBLE_ENV) $(ABIN)/ansible-lint -q roles playbooks
	@for inv in $(INVENTORIES); do \
	  echo "--- syntax-check against $$inv"; \
	  $(ANSIBLE_ENV) $(ABIN)/ansible-playbook -i $$inv --syntax-check $(PLAYBOOKS) >/dev/null || exit 1; \
	  echo "--- ansible-inventory --graph $$inv"; \
	  $(ANSIBLE_ENV) $(ABIN)/ansible-inventory -i $$inv --graph >/dev/null || exit 1; \
	done
	@echo "--- inventory schema check"
	@$(PY) scripts/check_inventories.py

## test-ansible: the plugins' and the schema check's unit tests
test-ansible: venv
	$(PY) -m pytest -q tests/ansible

## wheelhouse: the agent's wheel and its dependencies' wheels in .whl/ (the fetchml_agent role installs them)
wheelhouse: venv
	PYTHON=$(PY) scripts/build_wheelhouse.sh .whl

## systemd-image: the Debian 12 systemd image every scenario runs (built once; FORCE=1 rebuilds)
systemd-image:
	images/systemd/build.sh $(SYSTEMD_IMAGE)

# python-hcl2 parses the rendered Nomad configuration in the nomad scenario's verify step (no Nomad
# binary can be installed here). It belongs in pyproject's `ansible` extra.
molecule-deps: venv
	@$(PY) -c 'import hcl2' 2>/dev/null || $(PY) -m pip install -q 'python-hcl2~=8.1'

## molecule: every role's scenario, then the cluster scenario (site.yml on several containers)
molecule: $(addprefix molecule-,$(ROLES)) molecule-cluster

$(addprefix molecule-,$(ROLES)): molecule-%: systemd-image wheelhouse molecule-deps
	cd roles/$* && FETCHML_SYSTEMD_IMAGE=$(SYSTEMD_IMAGE) $(TOOLS_PATH) $(abspath $(ABIN))/molecule test

molecule-cluster: systemd-image wheelhouse molecule-deps
	cd tests/ansible && FETCHML_SYSTEMD_IMAGE=$(SYSTEMD_IMAGE) $(TOOLS_PATH) $(abspath $(ABIN))/molecule test -s cluster
