#!/usr/bin/env bash
# Installs the kiosk into a root filesystem: a venv under /opt/kiosk/versions/<version>, the
# `current` link, the systemd units, sysusers, tmpfiles, udev rules and drop-ins, then moves
# the writable state onto the persistent partition's tree (/data) with bind mounts in fstab,
# and turns on the read-only (overlay) root and the hardware watchdog.
#
#   install-kiosk.sh --root / --wheels /tmp/kiosk-wheels --repo /tmp/kiosk-src
#
# In the image build it runs inside the arm64 chroot with --root /. The tests run it with
# --root pointing at a temporary directory: every path is under ROOT, so the venv's scripts name
# ROOT/... and work there (a venv is not relocatable; in the chroot ROOT is / and all is right).
set -euo pipefail

ROOT=""
WHEELS=""
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --repo) REPO="$2"; shift 2 ;;
        *) echo "install-kiosk.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$ROOT" ] || [ -z "$WHEELS" ]; then
    echo "usage: install-kiosk.sh --root DIR --wheels DIR [--repo DIR]" >&2
    exit 2
fi
[ -f "$WHEELS/manifest.json" ] || { echo "install-kiosk.sh: $WHEELS/manifest.json missing (kiosk update manifest DIR)" >&2; exit 2; }
ROOT="${ROOT%/}"

VERSION="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$WHEELS/manifest.json")"
OPT="$ROOT/opt/kiosk"
VENV="$OPT/versions/$VERSION"

echo "== kiosk $VERSION into ${ROOT:-/}"

# ---- the application: one venv per version, from the release's wheels only (no index)
install -d -m 0755 "$OPT" "$OPT/versions"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
REQS="$(mktemp)"
trap 'rm -f "$REQS"' EXIT
"$PYTHON" - "$WHEELS/manifest.json" > "$REQS" <<'PY'
import json, re, sys
manifest = json.load(open(sys.argv[1]))
for name, digest in sorted(manifest["wheels"].items()):
    m = re.match(r"^([A-Za-z0-9_.]+)-([A-Za-z0-9_.!+]+)-", name)
    print(f"{m.group(1).replace('_', '-').lower()}=={m.group(2)} --hash=sha256:{digest}")
PY
"$VENV/bin/python" -m pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
    --find-links "$WHEELS" --require-hashes --only-binary=:all: -r "$REQS"
ln -sfn "versions/$VERSION" "$OPT/current"
"$VENV/bin/kiosk" --version

# ---- systemd units and the system's configuration for them
install -d -m 0755 "$ROOT/usr/lib/systemd/system" "$ROOT/usr/lib/sysusers.d" "$ROOT/usr/lib/tmpfiles.d" \
    "$ROOT/usr/lib/udev/rules.d" "$ROOT/usr/lib/systemd/system.conf.d" "$ROOT/usr/lib/systemd/journald.conf.d" \
    "$ROOT/etc/systemd/system/multi-user.target.wants"
for unit in kiosk.service kiosk-firstboot.service kiosk-update.service kiosk-update.path kiosk-update-recover.service; do
    install -m 0644 "$REPO/systemd/$unit" "$ROOT/usr/lib/systemd/system/$unit"
done
install -m 0644 "$REPO/systemd/sysusers.d/kiosk.conf" "$ROOT/usr/lib/sysusers.d/kiosk.conf"
install -m 0644 "$REPO/systemd/tmpfiles.d/kiosk.conf" "$ROOT/usr/lib/tmpfiles.d/kiosk.conf"
install -m 0644 "$REPO/systemd/udev/99-kiosk.rules" "$ROOT/usr/lib/udev/rules.d/99-kiosk.rules"
install -m 0644 "$REPO/systemd/system.conf.d/kiosk-watchdog.conf" "$ROOT/usr/lib/systemd/system.conf.d/kiosk-watchdog.conf"
install -m 0644 "$REPO/systemd/journald.conf.d/kiosk.conf" "$ROOT/usr/lib/systemd/journald.conf.d/kiosk.conf"
# Enabled by hand (what `systemctl enable` does), so this also works outside a chroot.
for unit in kiosk.service kiosk-firstboot.service kiosk-update.path kiosk-update-recover.service; do
    ln -sfn "/usr/lib/systemd/system/$unit" "$ROOT/etc/systemd/system/multi-user.target.wants/$unit"
done

# ---- persistent state: on the data partition (mounted at /data), bound into place
# The root is read-only (an overlay whose upper layer is RAM): only what is below survives a reboot.
# name on /data | where it is mounted | mode
PERSIST="etc-kiosk:/etc/kiosk:0750
lib-kiosk:/var/lib/kiosk:0750
log-kiosk:/var/log/kiosk:0750
opt-kiosk:/opt/kiosk:0755
journal:/var/log/journal:2755
network:/etc/NetworkManager/system-connections:0700"
install -d -m 0755 "$ROOT/data"
FSTAB="$ROOT/etc/fstab"
touch "$FSTAB"
if ! grep -q '^LABEL=KIOSKDATA' "$FSTAB"; then
    {
        echo "# kiosk: the persistent partition and what lives on it (image/scripts/install-kiosk.sh)"
        echo "LABEL=KIOSKDATA /data ext4 defaults,noatime,commit=5,errors=remount-ro 0 2"
    } >> "$FSTAB"
fi
while IFS=: read -r name target mode; do
    install -d -m "$mode" "$ROOT/data/$name" "$ROOT$target"
    if [ -n "$(ls -A "$ROOT$target")" ]; then
        # What the build put there (the first venv, say) moves onto the data partition.
        cp -a "$ROOT$target/." "$ROOT/data/$name/"
        find "$ROOT$target" -mindepth 1 -delete
    fi
    if ! grep -q " $target none bind" "$FSTAB"; then
        echo "/data/$name $target none bind,x-systemd.requires-mounts-for=/data 0 0" >> "$FSTAB"
    fi
done <<< "$PERSIST"

# ---- boot configuration: read-only overlay root, hardware watchdog
BOOT="$ROOT/boot/firmware"
if [ -f "$BOOT/cmdline.txt" ] && ! grep -q 'overlayroot=' "$BOOT/cmdline.txt"; then
    # overlayroot (initramfs): / is the read-only ext4 below a tmpfs; recurse=0 leaves /data and
    # /boot/firmware as they are. `overlayroot-chroot` opens the real root for maintenance.
    sed -i '1 s/$/ overlayroot=tmpfs:recurse=0/' "$BOOT/cmdline.txt"
fi
if [ -f "$BOOT/config.txt" ] && ! grep -q '^dtparam=watchdog=on' "$BOOT/config.txt"; then
    printf '\n# kiosk: the SoC watchdog, pinged by systemd (RuntimeWatchdogSec=10s)\ndtparam=watchdog=on\n' >> "$BOOT/config.txt"
fi
echo "== kiosk $VERSION installed"
