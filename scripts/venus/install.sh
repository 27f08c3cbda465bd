#!/bin/sh
# install.sh [--root DIR]: install or upgrade pzem-venus on a Venus OS GX device from
# this unpacked bundle. Runs as root in busybox sh; see docs/user-guide.md.
#
#   - everything goes to /data/pzem-venus/ (it survives firmware updates): the binaries,
#     reapply.sh, uninstall.sh, the service templates;
#   - /data/conf/pzem.conf is created from the commented example if it does not exist,
#     and never rewritten;
#   - one line in /data/rc.local runs /data/pzem-venus/reapply.sh at every boot, which
#     puts back what a firmware update wipes: the serial-starter template, the udev
#     pin, the /service links; it also (re)writes /data/conf/serial-starter.d/pzem.conf;
#   - running it again changes nothing; a newer bundle upgrades in place.
#
# --root DIR prefixes every path, to install into a scratch tree (nothing on the running
# system is touched then). The bundled binaries are never run here.
set -u

BUNDLE=$(cd "$(dirname "$0")" && pwd) || exit 1
# shellcheck source=scripts/venus/common.sh
. "$BUNDLE/common.sh"

usage() {
    cat <<EOF
Usage: sh install.sh [--root DIR]

Installs pzem-venus $(cat "$BUNDLE/VERSION" 2>/dev/null) ($(cat "$BUNDLE/arch" 2>/dev/null)) into /data/pzem-venus.
  --root DIR   install into DIR/... instead of / (a scratch tree that mimics a GX)
  -h, --help   this text
Configuration: /data/conf/pzem.conf. Uninstall: sh /data/pzem-venus/uninstall.sh [--purge]
EOF
}

root=
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

if ! [ -f "$BUNDLE/arch" ] || ! [ -f "$BUNDLE/VERSION" ] || ! [ -d "$BUNDLE/bin" ]; then
    die "$BUNDLE is not a complete pzem-venus bundle (arch, VERSION, bin/); unpack the whole tar.gz"
fi
ARCH=$(cat "$BUNDLE/arch")
VERSION=$(cat "$BUNDLE/VERSION")
set_root "$root"

# The machine must be able to run the bundle's binaries; uname is found through PATH.
machine=$(uname -m) || die "uname -m failed"
case $machine in
    armv7* | armv8l) have=armv7 ;;
    aarch64 | arm64) have=aarch64 ;;
    *) have=$machine ;;
esac
# A 64-bit kernel with a 32-bit (armhf) userland runs armv7 binaries.
if [ "$have" = aarch64 ] && [ "$ARCH" = armv7 ] &&
    [ -e "$ROOT/lib/ld-linux-armhf.so.3" ] && [ ! -e "$ROOT/lib/ld-linux-aarch64.so.1" ]; then
    have=armv7
fi
if [ "$have" != "$ARCH" ]; then
    case $have in
        armv7 | aarch64)
            die "this bundle holds $ARCH binaries, but this machine reports '$machine' (uname -m): install pzem-venus-$VERSION-$have.tar.gz instead. Nothing was changed."
            ;;
        *)
            die "this bundle holds $ARCH binaries, but this machine reports '$machine' (uname -m): pzem-venus runs on Venus OS GX devices, armv7 (Cerbo GX, CCGX, Ekrano, Raspberry Pi 2-4) or aarch64 (Venus v3.60+ on Raspberry Pi 5 and newer Cerbo GX). Nothing was changed."
            ;;
    esac
fi

check_gx
if live && [ "$(id -u)" != 0 ]; then
    die "run it as root (ssh root@<GX>)"
fi
begin

# A bad [install] section stops here, before anything changes.
read_install || die "nothing was installed: correct $CONF and run install.sh again"

say "installing pzem-venus $VERSION ($ARCH) into $PV"
CHANGED_BINS=
for f in "$BUNDLE"/bin/*; do
    [ -f "$f" ] || continue
    put "$f" "$PV/bin/${f##*/}" 755
    [ "$PUT" = 1 ] && CHANGED_BINS="$CHANGED_BINS ${f##*/}"
done
for f in "$PV"/bin/*; do
    [ -e "$f" ] || continue
    [ -e "$BUNDLE/bin/${f##*/}" ] || drop "$f"
done
put "$BUNDLE/common.sh" "$PV/common.sh" 644
put "$BUNDLE/reapply.sh" "$PV/reapply.sh" 755
put "$BUNDLE/uninstall.sh" "$PV/uninstall.sh" 755
put "$BUNDLE/VERSION" "$PV/VERSION" 644
put "$BUNDLE/arch" "$PV/arch" 644
put "$BUNDLE/pzem.conf.example" "$PV/pzem.conf.example" 644
put "$BUNDLE/udev/zz-pzem-venus.rules.in" "$PV/templates/udev.rules" 644
put_root "$BUNDLE/service/pzem-dbus/run" "$PV/templates/pzem-dbus/run" 755
put_root "$BUNDLE/service/pzem-dbus/log/run" "$PV/templates/pzem-dbus/log/run" 755
# The fixed services whose binary the bundle has; installed even when not enabled.
for name in $PZEM_FIXED_SERVICES; do
    if [ -f "$BUNDLE/bin/$name" ]; then
        put_root "$BUNDLE/service/$name/run" "$PV/service/$name/run" 755
        put_root "$BUNDLE/service/$name/log/run" "$PV/service/$name/log/run" 755
    elif [ -d "$PV/service/$name" ]; then
        unlink_service "$name"
        drop "$PV/service/$name"
        say "removed the $name service: this bundle has no $name"
    fi
done
for f in "$BUNDLE"/docs/*; do
    [ -f "$f" ] && put "$f" "$PV/docs/${f##*/}" 644
done
for f in "$PV"/docs/*; do
    [ -e "$f" ] || continue
    [ -e "$BUNDLE/docs/${f##*/}" ] || drop "$f"
done

if [ -e "$CONF" ]; then
    say "kept $CONF"
fi
rc_add
apply || die "install incomplete"

# New binaries run from the next start: restart what runs them.
if live && [ -n "$CHANGED_BINS" ] && command -v svc >/dev/null 2>&1; then
    for b in $CHANGED_BINS; do
        case $b in
            pzem-dbus) set -- "$SERVICE"/pzem-dbus.* ;;
            *) set -- "$SERVICE/$b" ;;
        esac
        for s in "$@"; do
            [ -d "$s" ] && svc -t "$s" && say "restarted $s"
        done
    done
fi

say "pzem-venus $VERSION is installed. Configuration: $CONF (see $PV/docs/user-guide.md)"
say "logs: tail -F /var/log/pzem-dbus.ttyUSB0/current | tai64nlocal"
