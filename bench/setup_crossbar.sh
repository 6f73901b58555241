#!/usr/bin/env bash
# Create bench/.venv-crossbar and install Crossbar.io into it (for bench/compare.py).
# Usage: bench/setup_crossbar.sh [crossbar-version-spec]   e.g. bench/setup_crossbar.sh "crossbar==23.1.2"
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-crossbar"
SPEC="${1:-crossbar}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install "$SPEC"
"$VENV/bin/crossbar" version
