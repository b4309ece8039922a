#!/usr/bin/env bash
# Runs every check: lint (ruff), types (mypy), and the tests (pytest) with a real Mosquitto,
# real SQLite files, real HTTP to the sandbox gateway and the CJK font. Installs what is missing.
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
apt_install mosquitto fonts-wqy-microhei shellcheck systemd build-essential python3-dev python3-venv postgresql
make_venv "[test]"
cd "$ROOT"
# Independent SDKs used as test oracles that clash with each other (e.g. two packages that both
# install `alipay`, or pin an old cryptography) get a venv each: .venv-oracles/<name>.
for requirements in tests/oracles/*.txt; do
    [ -e "$requirements" ] || continue
    name="$(basename "$requirements" .txt)"
    oracle="$ROOT/.venv-oracles/$name"
    if [ ! -x "$oracle/bin/python" ] || [ "$requirements" -nt "$oracle/.installed" ]; then
        python3 -m venv "$oracle"
        "$oracle/bin/python" -m pip install -q -r "$requirements"
        touch "$oracle/.installed"
    fi
done
echo "== ruff";   "$VENV/bin/ruff" check kiosk devices tests bench
echo "== mypy";   "$VENV/bin/mypy"
echo "== pytest"; "$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=20 "$@"
