#!/usr/bin/env bash
# Runs every check: lint (ruff), types (mypy), and the tests (pytest) with a real Mosquitto,
# real SQLite files, real HTTP to the sandbox gateway and the CJK font. Installs what is missing.
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
apt_install mosquitto fonts-wqy-microhei
make_venv "[test]"
cd "$ROOT"
echo "== ruff";   "$VENV/bin/ruff" check kiosk devices tests bench
echo "== mypy";   "$VENV/bin/mypy"
echo "== pytest"; "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
