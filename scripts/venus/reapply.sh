#!/bin/sh
# reapply.sh [--root DIR] [--boot]: put back the parts of pzem-venus that live outside
# /data, from /data/pzem-venus. /data/rc.local runs it at every boot (with --boot), so a
# firmware update, which replaces the root file system, is undone at the next start:
#   - the serial-starter template /opt/victronenergy/service-templates/pzem-dbus;
#   - /data/conf/serial-starter.d/pzem.conf, merged again with the other drivers' aliases;
#   - the udev rule of [install] pin-adapter, /etc/udev/rules.d/zz-pzem-venus.rules;
#   - the /service links of the fixed services that [install] enables.
# Run it by hand after editing the [install] section of /data/conf/pzem.conf.
#
# --boot: write the messages to /data/pzem-venus/reapply.log and always exit 0, so that
# the other lines of rc.local run whatever happens here.
set -u

HERE=$(cd "$(dirname "$0")" && pwd) || exit 1
# shellcheck source=scripts/venus/common.sh
. "$HERE/common.sh"

root=
boot=0
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
        --boot)
            boot=1
            shift
            ;;
        -h | --help)
            echo "Usage: $0 [--root DIR] [--boot]"
            exit 0
            ;;
        *)
            echo "Usage: $0 [--root DIR] [--boot]" >&2
            exit 2
            ;;
    esac
done

main() {
    set_root "$root"
    check_gx
    [ -d "$PV/templates" ] || die "$PV is not installed (no $PV/templates)"
    begin
    apply
}

if [ "$boot" = 1 ]; then
    set_root "$root"
    exec >"$PV/reapply.log" 2>&1
    echo "pzem-venus: reapply at boot, $(date)"
    if (main); then
        echo "pzem-venus: done"
    else
        echo "pzem-venus: FAILED (see above)"
    fi
    exit 0
fi
main
