#!/usr/bin/env bash
# The README's test command: installs what the suite needs, then runs it.
# Python deps go into the current interpreter (or the active virtualenv);
# redis-server, redis-sentinel, haproxy and chromium come from apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"

echo "== ruff"; "$PY" -m ruff check . && "$PY" -m ruff format --check .
echo "== mypy --strict"; "$PY" -m mypy
echo "== docker/ (static)"; bash .ci/validate_docker.sh
echo "== pytest"; "$PY" -m pytest -q -p no:cacheprovider "$@"
