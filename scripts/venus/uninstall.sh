#!/bin/sh
# uninstall.sh [--root DIR] [--purge]: remove pzem-venus from a GX, reversing every step
# of install.sh: the services are stopped, the /service links, the serial-starter template
# and config, the udev rule, the /data/rc.local line, the logs and /data/pzem-venus go.
# Other drivers' files, aliases and rc.local lines are left as they are.
#
# Kept unless --purge: /data/conf/pzem.conf (the configuration) and
# /data/var/lib/pzem-venus (energy totals, discovered meters, energy flows, history).
# The meters' records in localsettings (device instances, names) stay in any case.
set -u

HERE=$(cd "$(dirname "$0")" && pwd) || exit 1
# shellcheck source=scripts/venus/common.sh
. "$HERE/common.sh"

usage() {
    cat <<EOF
Usage: sh $0 [--root DIR] [--purge]
  --purge      also remove /data/conf/pzem.conf and /data/var/lib/pzem-venus (history)
  --root DIR   uninstall from DIR/... instead of /
EOF
}

root=
purge=0
while [ $# -gt 0 ]; do
    case $1 in
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            root=$2
            shift 2
            ;;
        --root=*)
            root=${1#--root=}
            shift
            ;;
        --purge)
            purge=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
done

set_root "$root"
check_gx
if live && [ "$(id -u)" != 0 ]; then
    die "run it as root"
fi
begin

# The fixed services: unlink from /service and stop.
for name in $PZEM_FIXED_SERVICES; do
    unlink_service "$name"
done

# pzem-dbus instances that serial-starter made from the template (volatile, per port).
for link in "$SERVICE"/pzem-dbus.*; do
    [ -L "$link" ] || [ -e "$link" ] || continue
    target=$(readlink "$link" 2>/dev/null || true)
    rm -rf "$link" || die "cannot remove $link"
    if live && command -v svc >/dev/null 2>&1 && [ -n "$target" ] && [ -d "$target" ]; then
        svc -dx "$target" "$target/log" 2>/dev/null || true
    fi
    say "stopped ${link##*/}"
done
for dir in "$VOLATILE"/pzem-dbus.*; do
    [ -d "$dir" ] && drop "$dir"
done

# serial-starter: the template (rootfs) and our config file; other drivers' stay.
drop "$TEMPLATE" rootfs
[ "$GONE" = 1 ] && say "removed $TEMPLATE"
template_gone=$GONE
drop "$SS_OURS"
[ "$GONE" = 1 ] && say "removed $SS_OURS"
if live && [ "$GONE$template_gone" != 00 ] && [ -d "$SERVICE/serial-starter" ]; then
    svc -t "$SERVICE/serial-starter" && say "restarted serial-starter"
fi

drop "$UDEV_RULE" rootfs
if [ "$GONE" = 1 ]; then
    say "removed $UDEV_RULE"
    live && command -v udevadm >/dev/null 2>&1 && udevadm control --reload-rules
fi

rc_remove

for log in "$LOGS"/pzem-dbus.* "$LOGS/pzem-energy" "$LOGS/pzem-logger" "$LOGS/pzem-web"; do
    [ -d "$log" ] && drop "$log"
done

drop "$PV"
[ "$GONE" = 1 ] && say "removed $PV"

if [ "$purge" = 1 ]; then
    drop "$CONF"
    [ "$GONE" = 1 ] && say "removed $CONF"
    drop "$STATE"
    [ "$GONE" = 1 ] && say "removed $STATE"
else
    [ -e "$CONF" ] && say "kept $CONF (uninstall.sh --purge removes it)"
    [ -e "$STATE" ] && say "kept $STATE: energy totals and history (uninstall.sh --purge removes them)"
fi
say "pzem-venus is uninstalled"
