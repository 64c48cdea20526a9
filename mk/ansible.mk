# The Ansible suite: GitOps checks (make lint), plugin tests, molecule scenarios. Included by the
# Makefile (VENV, PY, venv-ansible). The tools come from the venv's `ansible` extra, which
# venv-ansible installs on first use.
ABIN := $(VENV)/bin
ANSIBLE_ENV := ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg PATH=$(abspath $(ABIN)):$$PATH
TOOLS_PATH := PATH=$(abspath $(ABIN)):$$PATH
INVENTORIES := $(sort $(wildcard inventories/*/hosts.yml))
PLAYBOOKS := $(sort $(wildcard playbooks/*.yml))
ROLES := common docker nvidia_gpu nomad network_policy fetchml_agent workspace_images encrypted_storage
SYSTEMD_IMAGE ?= fetchml/ansible-systemd:bookworm

.PHONY: lint-ansible test-ansible molecule molecule-deps wheelhouse systemd-image $(addprefix molecule-,$(ROLES)) molecule-cluster

lint: lint-ansible

## lint-ansible: yamllint, ansible-lint (production profile), --syntax-check of every playbook against
## every inventory, ansible-inventory --graph, and the inventory schema check
lint-ansible: venv-ansible
	@echo "--- yamllint"
	@$(ABIN)/yamllint -s roles playbooks inventories .config .yamllint .ansible-lint galaxy.yml meta tests/ansible/molecule
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
test-ansible: venv-ansible
	$(PY) -m pytest -q tests/ansible

## wheelhouse: the agent's wheel and its dependencies' wheels in .whl/ (the fetchml_agent role installs them)
wheelhouse: venv
	PYTHON=$(PY) scripts/build_wheelhouse.sh .whl

## systemd-image: the Debian 12 systemd image every scenario runs (built once; FORCE=1 rebuilds)
systemd-image:
	images/systemd/build.sh $(SYSTEMD_IMAGE)

# molecule, its docker driver and python-hcl2 (the nomad scenario's verify step parses the rendered
# Nomad configuration with it) are in pyproject's `ansible` extra.
molecule-deps: venv-ansible

## molecule: every role's scenario and the cluster scenario (site.yml on several containers). Each
## scenario's containers have names of their own, so `make -j2 molecule` runs two at a time. A
## scenario's full log goes to build/molecule/<name>.log and is shown when it fails.
MOLECULE_LOGS := build/molecule
MOLECULE_RUN = mkdir -p $(CURDIR)/$(MOLECULE_LOGS) && start=$$(date +%s) && \
  if FETCHML_SYSTEMD_IMAGE=$(SYSTEMD_IMAGE) FETCHML_MOLECULE_NAME=$(1) $(TOOLS_PATH) $(abspath $(ABIN))/molecule test $(2) \
       >$(CURDIR)/$(MOLECULE_LOGS)/$(1).log 2>&1; \
  then echo "molecule $(1): passed in $$(( $$(date +%s) - start ))s"; \
  else tail -150 $(CURDIR)/$(MOLECULE_LOGS)/$(1).log; echo "molecule $(1): FAILED (log: $(MOLECULE_LOGS)/$(1).log)"; exit 1; fi

molecule: molecule-cluster $(addprefix molecule-,$(ROLES))

$(addprefix molecule-,$(ROLES)): molecule-%: systemd-image wheelhouse molecule-deps
	@cd roles/$* && $(call MOLECULE_RUN,$*,)

molecule-cluster: systemd-image wheelhouse molecule-deps
	@cd tests/ansible && $(call MOLECULE_RUN,cluster,-s cluster)
