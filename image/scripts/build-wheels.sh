#!/usr/bin/env bash
# A release: the kiosk's wheel and every dependency's wheel for the device, with manifest.json
# (sha256 of each) and, given the fleet's Ed25519 key, manifest.sig. The image build installs
# from it (install-kiosk.sh) and so does every later update (kiosk update apply DIR).
#
#   build-wheels.sh --repo . --out dist/wheels [--sign fleet-release.key]
#
# Wheels are for Raspberry Pi OS Bookworm arm64 (CPython 3.11, glibc 2.36) unless
# KIOSK_WHEEL_PLATFORM=host (the tests build a release for the machine they run on).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT=""
SIGN=""
PYTHON="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
    case "$1" in
        --repo) REPO="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --sign) SIGN="$2"; shift 2 ;;
        *) echo "build-wheels.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$OUT" ]; then
    echo "usage: build-wheels.sh --out DIR [--repo DIR] [--sign KEY]" >&2
    exit 2
fi
mkdir -p "$OUT"

"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$REPO"
KIOSK_WHEEL="$(find "$OUT" -maxdepth 1 -name 'kiosk-*.whl' -print -quit)"

PLATFORM_ARGS=()
if [ "${KIOSK_WHEEL_PLATFORM:-arm64}" != "host" ]; then
    PLATFORM_ARGS=(--platform manylinux_2_36_aarch64 --platform manylinux_2_28_aarch64
                   --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
                   --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none)
fi
# pip too: a version's venv carries the pip that installs the next version.
"$PYTHON" -m pip download --quiet --only-binary=:all: "${PLATFORM_ARGS[@]}" --dest "$OUT" "$KIOSK_WHEEL" pip

# From inside OUT: `python -m` looks in the working directory first, and a source tree there
# would shadow the installed kiosk.
OUT="$(cd "$OUT" && pwd)"
if [ -n "$SIGN" ]; then
    SIGN="$(cd "$(dirname "$SIGN")" && pwd)/$(basename "$SIGN")"
    (cd "$OUT" && "$PYTHON" -m kiosk update manifest . --sign "$SIGN")
else
    (cd "$OUT" && "$PYTHON" -m kiosk update manifest .)
fi
