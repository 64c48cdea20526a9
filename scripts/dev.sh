#!/usr/bin/env bash
# Development stack: `scripts/dev.sh up` (make dev-up) and `scripts/dev.sh down` (make dev-down).
# up: creates .venv with the package, a development admin key, .fetchml/agent.yaml (local runtime),
#     starts the agent on 127.0.0.1:9101 and writes ml's config so `ml` talks to it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.fetchml
venv=${VENV:-$root/.venv}
listen=${FETCHML_DEV_LISTEN:-127.0.0.1:9101}
ml_config=${FETCHML_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/fetchml/ml.yaml}

ensure_venv() {
  # EXTRAS: the pyproject extras wanted (dev by default; CI adds ansible). Reinstalls only when the
  # package is missing, pyproject.toml changed, or an extra is asked for that is not installed yet.
  local extras=${EXTRAS:-dev} stamp="$venv/.fetchml-installed" have want
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    python3 -m venv "$venv"
  fi
  have=$(cat "$stamp" 2>/dev/null || true)
  want=$(printf '%s\n' "${have//,/$'\n'}" "${extras//,/$'\n'}" | sed '/^$/d' | sort -u | paste -sd, -)
  if ! "$venv/bin/python" -c 'import fetchml_agent, jupyterlab, websockets, uvicorn' 2>/dev/null \
     || [ pyproject.toml -nt "$stamp" ] || [ "$want" != "$have" ]; then
    echo "installing the package and its dependencies ($want) into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -e ".[$want]"
    echo "$want" >"$stamp"
  fi
}

agent_pid() { [ -f "$state/agent.pid" ] && kill -0 "$(cat "$state/agent.pid")" 2>/dev/null && cat "$state/agent.pid"; }

up() {
  ensure_venv
  mkdir -p "$state"
  chmod 700 "$state"
  if [ ! -s "$state/dev-admin.key" ]; then
    (umask 077; "$venv/bin/python" -c 'import secrets; print("fml_dev_" + secrets.token_urlsafe(24))' >"$state/dev-admin.key")
  fi
  key=$(cat "$state/dev-admin.key")
  verifier=$(printf '%s\n' "$key" | "$venv/bin/fetchml-agent" hash-key -)
  cat >"$state/agent.yaml" <<YAML
# Written by \`make dev-up\`: a development agent with the embedded local runtime.
listen: $listen
data_dir: ./data
runtime: local
users:
  - name: admin
    role: admin
    api_key_verifier: "$verifier"
YAML
  if [ "$(id -u)" = 0 ]; then
    # As root the agent isolates: each owner's workspaces run as an OS user of their own (fml-<name>,
    # created on first use) with files that user can reach, outside .fetchml (0700).
    printf 'local:\n  workspaces_dir: %s\n' "${FETCHML_DEV_WORKSPACES:-/var/lib/fetchml-dev-workspaces}" >>"$state/agent.yaml"
  fi
  if pid=$(agent_pid); then
    echo "agent already running (pid $pid)"
  else
    "$venv/bin/fetchml-agent" check-config --config "$state/agent.yaml" >/dev/null
    setsid nohup "$venv/bin/fetchml-agent" serve --config "$state/agent.yaml" >>"$state/agent.log" 2>&1 </dev/null &
    echo $! >"$state/agent.pid"
    for _ in $(seq 100); do
      if "$venv/bin/python" - "$listen" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}/api/v1/health", timeout=1).read()
PY
      if ! kill -0 "$(cat "$state/agent.pid")" 2>/dev/null; then
        echo "the agent exited during start-up; its log:" >&2; tail -20 "$state/agent.log" >&2; exit 1
      fi
      sleep 0.2
    done
    echo "agent started (pid $(cat "$state/agent.pid")), log: $state/agent.log"
  fi
  mkdir -p "$(dirname "$ml_config")"
  (umask 077; printf 'server: ws://%s/ws\napi_key: %s\n' "$listen" "$key" >"$ml_config")
  if [ -d "$HOME/.local/bin" ] && [[ ":$PATH:" == *":$HOME/.local/bin:"* ]]; then
    ln -sf "$venv/bin/ml" "$HOME/.local/bin/ml"
  fi
  echo "ml is configured ($ml_config). Next:"
  echo "  . .venv/bin/activate && ml jupyter create my-workspace"
}

down() {
  if pid=$(agent_pid); then
    if [ -x "$venv/bin/ml" ] && [ -f "$ml_config" ]; then
      for ws in $("$venv/bin/ml" jupyter list --json 2>/dev/null | "$venv/bin/python" -c \
          'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin)["services"] if s["status"]!="stopped"))'); do
        "$venv/bin/ml" jupyter stop "$ws" || true
      done
    fi
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/agent.pid"
    echo "agent stopped"
  else
    echo "no agent running"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  venv) ensure_venv ;;
  *) echo "usage: $0 up|down|venv" >&2; exit 2 ;;
esac
