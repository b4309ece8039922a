#!/usr/bin/env bash
# Runs the kiosk end to end on simulated hardware against the sandbox gateway.
# Extra arguments go to `kiosk demo` (e.g. --sales 5 --mqtt mqtt://127.0.0.1:1883).
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
apt_install fonts-wqy-microhei
make_venv ""
cd "$ROOT"
exec "$VENV/bin/kiosk" demo --frames "$ROOT/frames" "$@"
