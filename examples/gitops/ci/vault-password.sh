#!/bin/sh
# ansible-vault's password in CI: ANSIBLE_VAULT_PASSWORD_FILE points here, the pipeline's secret
# ANSIBLE_VAULT_PASSWORD holds it. Ansible runs this file and reads the password from its output.
if [ -z "${ANSIBLE_VAULT_PASSWORD:-}" ]; then
  echo "ANSIBLE_VAULT_PASSWORD is not set: add it to the pipeline's secrets" >&2
  exit 1
fi
printf '%s\n' "$ANSIBLE_VAULT_PASSWORD"
