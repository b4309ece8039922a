#!/bin/sh
# genimage exec-pre for the root partition: the root and boot lines of /etc/fstab, by label,
# in front of the kiosk's own lines (written by install-kiosk.sh). The root is mounted read-only:
# overlayroot puts a tmpfs above it.
set -eu

case "$1" in
    ROOT)
        fstab="$IMAGEMOUNTPATH/etc/fstab"
        kiosk_lines="$(grep -v -e '^LABEL=ROOT ' -e '^LABEL=BOOT ' "$fstab" 2>/dev/null || true)"
        {
            echo "LABEL=ROOT / ext4 ro,noatime,errors=remount-ro 0 1"
            echo "LABEL=BOOT /boot/firmware vfat defaults,noatime,fmask=0077,dmask=0077,errors=remount-ro 0 2"
            echo "tmpfs /tmp tmpfs nosuid,nodev,mode=1777 0 0"
            printf '%s\n' "$kiosk_lines"
        } > "$fstab.new"
        mv "$fstab.new" "$fstab"
        ;;
    *)
        ;;
esac
