# GitOps: the collection an inventory repository pins, and the plan and drift steps of its pipeline
# (docs/gitops.md). Included by the Makefile after mk/ansible.mk (ABIN, ANSIBLE_ENV, PY).
COLLECTION_DIR ?= build/collection
COLLECTION_VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
COLLECTION_TARBALL := $(COLLECTION_DIR)/fetchml-platform-$(COLLECTION_VERSION).tar.gz
PLAYBOOK ?= playbooks/site.yml
# More ansible-playbook arguments for plan and drift, e.g. PLAN_ARGS="--limit gpu_clients --vault-password-file ~/.vault".
PLAN_ARGS ?=
# Where plan and drift write plan.json and plan.md (default build/plan/<inventory name>).
PLAN_OUTPUT ?=
GITOPS_EXAMPLE := examples/gitops

.PHONY: collection plan drift lint-gitops _need-inventory

lint-ansible: lint-gitops

## collection: the Ansible collection fetchml.platform, build/collection/fetchml-platform-<version>.tar.gz
## (install it with `ansible-galaxy collection install --offline -p DIR <tarball>`)
collection: venv
	@mkdir -p $(COLLECTION_DIR)
	@$(ANSIBLE_ENV) $(ABIN)/ansible-galaxy collection build --force --output-path $(COLLECTION_DIR) >/dev/null
	@echo "$(COLLECTION_TARBALL)"

_need-inventory:
	@test -n "$(INVENTORY)" || { echo "usage: make $(MAKECMDGOALS) INVENTORY=inventories/<environment> [PLAYBOOK=$(PLAYBOOK)] [PLAN_ARGS='...']" >&2; exit 2; }

## plan: INVENTORY=inventories/staging: ansible-playbook --check --diff of PLAYBOOK, with a summary of what
## would change on which host (shown, and in build/plan/<inventory>/plan.md and plan.json)
plan: venv _need-inventory
	@$(ANSIBLE_ENV) $(PY) scripts/gitops_plan.py plan -i $(INVENTORY) --playbook $(PLAYBOOK) $(if $(PLAN_OUTPUT),--output $(PLAN_OUTPUT)) -- $(PLAN_ARGS)

## drift: INVENTORY=...: the same check-mode run; fails (exit 10) naming each task and host that drifted
drift: venv _need-inventory
	@$(ANSIBLE_ENV) $(PY) scripts/gitops_plan.py drift -i $(INVENTORY) --playbook $(PLAYBOOK) $(if $(PLAN_OUTPUT),--output $(PLAN_OUTPUT)) -- $(PLAN_ARGS)

## lint-gitops: the inventory-repository template: yamllint, and its pipelines against the public GitHub
## workflow and GitLab CI schemas (vendored in check-jsonschema: no network)
lint-gitops: venv
	@echo "--- yamllint $(GITOPS_EXAMPLE)"
	@$(ABIN)/yamllint -s -c $(GITOPS_EXAMPLE)/.yamllint $(GITOPS_EXAMPLE)
	@echo "--- pipeline schemas ($(GITOPS_EXAMPLE))"
	@$(ABIN)/check-jsonschema -q --builtin-schema vendor.github-workflows $(GITOPS_EXAMPLE)/.github/workflows/*.yml
	@$(ABIN)/check-jsonschema -q --builtin-schema vendor.gitlab-ci --data-transform gitlab-ci $(GITOPS_EXAMPLE)/.gitlab-ci.yml
