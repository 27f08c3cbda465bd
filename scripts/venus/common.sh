# shellcheck shell=sh
# common.sh: what install.sh, reapply.sh and uninstall.sh share. POSIX sh for busybox
# (Venus OS has no bash and no Python in its base image); sourced, never run.
#
# Every path is "$ROOT/..." so that --root DIR works on a scratch tree that mimics a GX;
# on a GX, ROOT is empty. Things that act on the running system (svc, udevadm) happen
# only when ROOT is empty ("live"). Every write compares first and leaves an identical
# file alone, so running any of the scripts twice changes nothing the second time.
# Nothing here runs the bundled binaries.

PZEM_FIXED_SERVICES="pzem-energy pzem-logger pzem-web"
PZEM_MARK="# pzem-venus"

say() { printf 'pzem-venus: %s\n' "$*"; }
warn() { printf 'pzem-venus: warning: %s\n' "$*" >&2; }
die() {
    printf 'pzem-venus: error: %s\n' "$*" >&2
    exit 1
}

# set_root DIR: check the --root argument and derive every path from it.
set_root() {
    ROOT=${1%/}
    if [ -n "$ROOT" ]; then
        case $ROOT in
            /*) ;;
            *) die "--root needs an absolute path, not '$1'" ;;
        esac
        # The root ends up inside sed replacements and in the serial-starter template,
        # where serial-starter replaces the first TTY (and PRODUCT) of every line.
        case $ROOT in
            *[!A-Za-z0-9/._+-]* | *TTY* | *PRODUCT*)
                die "--root '$1': use a path of letters, digits and / . _ + - without 'TTY' or 'PRODUCT'"
                ;;
        esac
        [ -d "$ROOT" ] || die "--root $ROOT: no such directory"
    fi
    # shellcheck disable=SC2034 # some are used only by the scripts that source this file
    {
        PV=$ROOT/data/pzem-venus
        CONF=$ROOT/data/conf/pzem.conf
        STATE=$ROOT/data/var/lib/pzem-venus
        RC=$ROOT/data/rc.local
        RC_CREATED=$PV/rc-local-created
        SS_MAIN=$ROOT/etc/venus/serial-starter.conf
        SS_DIR=$ROOT/data/conf/serial-starter.d
        SS_OURS=$SS_DIR/pzem.conf
        TEMPLATE=$ROOT/opt/victronenergy/service-templates/pzem-dbus
        UDEV_RULE=$ROOT/etc/udev/rules.d/zz-pzem-venus.rules
        SERVICE=$ROOT/service
        VOLATILE=$ROOT/var/volatile/services
        LOGS=$ROOT/var/log
        REMOUNT=$ROOT/opt/victronenergy/swupdate-scripts/remount-rw.sh
        MOUNTS=$ROOT/proc/mounts
    }
}

live() { [ -z "$ROOT" ]; }

# check_gx: refuse a tree that is not a Venus OS root.
check_gx() {
    [ -d "$ROOT/data" ] && [ -d "$ROOT/opt/victronenergy" ] && return 0
    if live; then
        die "this does not look like a Venus OS GX device (no /data or /opt/victronenergy); to try the scripts elsewhere, give --root DIR"
    fi
    die "$ROOT does not look like a Venus OS root: it needs data/ and opt/victronenergy/"
}

# begin: a private scratch directory (for candidate files, never inside ROOT).
begin() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pzem-venus.XXXXXX") || die "cannot create a temporary directory"
    trap 'rm -rf "$WORK"' EXIT
    trap 'exit 130' INT TERM
    RW_DONE=0
}

# --- the read-only root file system -------------------------------------------------

# rootfs_ro: whether / is mounted read-only (the last mount of / in ROOT/proc/mounts).
rootfs_ro() {
    [ -r "$MOUNTS" ] || return 1
    awk '$2 == "/" { ro = ($4 ~ /(^|,)ro(,|$)/) } END { exit !ro }' "$MOUNTS"
}

# rootfs_rw: before the first write to the rootfs (/opt, /etc), remount it read-write
# with Venus's own helper when it is read-only. Called only when a write is needed.
rootfs_rw() {
    [ "$RW_DONE" = 1 ] && return 0
    RW_DONE=1
    rootfs_ro || return 0
    [ -f "$REMOUNT" ] || die "the root file system is read-only and $REMOUNT is missing"
    say "the root file system is read-only: $REMOUNT"
    sh "$REMOUNT" || die "$REMOUNT failed"
    ! rootfs_ro || die "the root file system is still read-only after $REMOUNT"
}

# --- files that change only when they must --------------------------------------------

# put SRC DEST MODE [rootfs]: make DEST a copy of SRC with MODE (octal). Sets PUT=1 when
# something was written, 0 when DEST was already right. The new file is written beside
# DEST and renamed over it, so a running binary is never overwritten in place.
put() {
    PUT=0
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then
        if [ -z "$(find "$2" -prune -perm "$3")" ]; then
            [ "${4:-}" = rootfs ] && rootfs_rw
            chmod "$3" "$2" || die "cannot chmod $2"
            PUT=1
        fi
        return 0
    fi
    [ "${4:-}" = rootfs ] && rootfs_rw
    mkdir -p "$(dirname "$2")" || die "cannot create $(dirname "$2")"
    if ! { cp "$1" "$2.pzem-new" && chmod "$3" "$2.pzem-new" && mv -f "$2.pzem-new" "$2"; }; then
        die "cannot write $2"
    fi
    PUT=1
}


# put_root SRC DEST MODE: a template of the bundle, with @ROOT@ replaced by the root.
put_root() {
    sed "s|@ROOT@|$ROOT|g" "$1" >"$WORK/subst" || die "cannot read $1"
    put "$WORK/subst" "$2" "$3"
}

# drop PATH [rootfs]: remove a file, link or directory if it is there. GONE=1 if it was.
drop() {
    GONE=0
    [ -e "$1" ] || [ -L "$1" ] || return 0
    [ "${2:-}" = rootfs ] && rootfs_rw
    rm -rf "$1" || die "cannot remove $1"
    GONE=1
}

# --- the [install] section of pzem.conf -----------------------------------------------

# read_install: check the [install] section of $CONF and keep its entries in INSTALL
# ("key value" lines). On an error, print it (naming the line and the fix) and return 1.
# The format is the one every program of the project reads: `[name]` headers of
# lower-case letters, digits and -, `key = value` (or `key value`) lines, # comments.
read_install() {
    INSTALL=
    [ -e "$CONF" ] || return 0
    [ -r "$CONF" ] || {
        warn "cannot read $CONF"
        return 1
    }
    INSTALL=$(awk -v file="$CONF" -v keys="pzem-energy pzem-logger pzem-web pin-adapter" '
        function fail(msg) {
            printf "pzem-venus: error: %s: line %d: %s\n", file, NR, msg > "/dev/stderr"
            bad = 1
            exit 1
        }
        BEGIN { n = split(keys, list, " "); for (i = 1; i <= n; i++) known[list[i]] = 1 }
        {
            line = $0
            sub(/#.*/, "", line)
            gsub(/^[ \t\r]+|[ \t\r]+$/, "", line)
            if (line == "") next
            if (substr(line, 1, 1) == "[" || substr(line, length(line)) == "]") {
                # The same rule as pzem-dbus: [name], or [meters PORT] for the meters of one port.
                if (line !~ /^\[[ \t]*[a-z0-9-]+[ \t]*\]$/ && line !~ /^\[[ \t]*meters[ \t]+[A-Za-z0-9._:+-]+[ \t]*\]$/)
                    fail("\047" line "\047 is not a section header; write it as [name] on a line of its own, e.g. [install], or [meters PORT] for one port\047s meters")
                name = line
                gsub(/^\[[ \t]*|[ \t]*\]$/, "", name)
                here = (name == "install")
                if (here && seen) fail("a second [install] section (the first is on line " seen "); put all its keys in one")
                if (here) seen = NR
                next
            }
            if (!here) next
            eq = index(line, "=")
            if (eq) { key = substr(line, 1, eq - 1); value = substr(line, eq + 1) }
            else if (match(line, /[ \t]/)) { key = substr(line, 1, RSTART - 1); value = substr(line, RSTART + 1) }
            else { key = line; value = "" }
            gsub(/^[ \t]+|[ \t]+$/, "", key)
            gsub(/^[ \t]+|[ \t]+$/, "", value)
            if (!(key in known)) fail("unknown key \047" key "\047 in [install]; the keys are pzem-energy, pzem-logger, pzem-web, pin-adapter")
            if (value == "") fail("\047" key "\047 has no value; write " key " = VALUE")
            if (key in first) fail("\047" key "\047 is given twice in [install] (first on line " first[key] "); keep one")
            first[key] = NR
            if (key == "pin-adapter") {
                m = split(value, serials, /[ \t,]+/)
                value = ""
                for (i = 1; i <= m; i++) {
                    if (serials[i] == "") continue
                    if (serials[i] !~ /^[A-Za-z0-9_.:+-]+$/)
                        fail("pin-adapter: \047" serials[i] "\047 is not a USB serial number (letters, digits and _ . : + -); see ls -l /dev/serial/by-id/")
                    value = value (value == "" ? "" : " ") serials[i]
                }
            } else if (value != "yes" && value != "no") {
                fail(key " = " value ": write " key " = yes or " key " = no")
            }
            out[++count] = key " " value
        }
        END {
            if (bad) exit 1
            for (i = 1; i <= count; i++) print out[i]
        }' "$CONF") || return 1
}

# enabled NAME: whether [install] says NAME = yes.
enabled() {
    printf '%s\n' "$INSTALL" | awk -v k="$1" '$1 == k { v = $2 } END { exit v != "yes" }'
}

# pinned: the USB serial numbers of [install] pin-adapter, space-separated.
pinned() {
    printf '%s\n' "$INSTALL" | awk '$1 == "pin-adapter" { $1 = ""; sub(/^ /, ""); print }'
}

# --- serial-starter -------------------------------------------------------------------

# ss_aliases FILE DEPTH: the alias lines serial-starter loads from FILE and its includes,
# in load order, as "name value file"; our own file is left out unless SS_WITH_OURS=1.
ss_aliases() {
    [ "$2" -gt 8 ] && return 0
    [ -r "$1" ] || return 0
    sed 's/#.*//' "$1" | while read -r kw name value; do
        case $kw in
            alias)
                [ -n "$name" ] && printf '%s %s %s\n' "$name" "$value" "$1"
                ;;
            include)
                [ -n "$name" ] || continue
                inc=$ROOT${name%/}
                if [ -d "$inc" ]; then
                    for f in "$inc"/*.conf; do
                        [ -f "$f" ] || continue
                        [ "$f" = "$SS_OURS" ] && [ "${SS_WITH_OURS:-0}" != 1 ] && continue
                        ss_aliases "$f" $(($2 + 1))
                    done
                else
                    ss_aliases "$inc" $(($2 + 1))
                fi
                ;;
        esac
    done
}

# ss_effective NAME: "value file" of alias NAME as serial-starter ends up with it.
ss_effective() {
    ss_aliases "$SS_MAIN" 0 | awk -v n="$1" '$1 == n { v = $2; f = $3 } END { if (v != "") print v, f }'
}

# ss_apply: write /data/conf/serial-starter.d/pzem.conf: the pzem service, and the
# default and rs485 aliases as the other files leave them, with pzem added. Other
# drivers' files are read, never written. SS_CHANGED=1 when the file changed.
ss_apply() {
    if [ -f "$SS_MAIN" ] &&
        ! grep -Eq '^[[:space:]]*include[[:space:]]+/data/conf/serial-starter\.d/?([[:space:]]|#|$)' "$SS_MAIN"; then
        warn "$SS_MAIN does not include /data/conf/serial-starter.d: serial-starter will not start pzem-dbus on this Venus version"
    fi
    {
        echo "$PZEM_MARK: pzem-dbus as a serial-starter driver, from the service template pzem-dbus."
        echo "# Written at install and at every boot by $PV/reapply.sh, which adds pzem to the"
        echo "# default and rs485 aliases and keeps the names the other drivers' files put there."
        echo "# Edits are overwritten; $PV/uninstall.sh removes the file."
        echo "service pzem pzem-dbus"
        for alias in default rs485; do
            value=$(ss_effective "$alias" | awk '{ print $1 }')
            if [ -z "$value" ]; then
                warn "serial-starter has no '$alias' alias; pzem is not added to it"
                continue
            fi
            case ":$value:" in
                *:pzem:*) ;;
                *) value=$value:pzem ;;
            esac
            echo "alias $alias $value"
        done
    } >"$WORK/ss" || die "cannot write to $WORK"
    put "$WORK/ss" "$SS_OURS" 644
    SS_CHANGED=$PUT
    for alias in default rs485; do
        # shellcheck disable=SC2046 # two words on purpose
        set -- $(SS_WITH_OURS=1 ss_effective "$alias")
        [ $# -ge 2 ] || continue
        case ":$1:" in
            *:pzem:*) ;;
            *) warn "$2 is loaded after pzem.conf and sets 'alias $alias $1' without pzem: serial-starter will not try pzem-dbus on those ports (ask that driver to merge, or pin the adapter)" ;;
        esac
    done
}

# --- /data/rc.local ------------------------------------------------------------------

rc_line() {
    printf '[ -x %s/reapply.sh ] && %s/reapply.sh --boot%s %s\n' "$PV" "$PV" "${ROOT:+ --root $ROOT}" "$PZEM_MARK"
}

# rc_add: exactly one pzem-venus line in /data/rc.local (created with a shebang and the
# run bit when absent). Our line is recognised by its trailing "# pzem-venus"; it
# replaces an older one of ours in place, else goes before a closing `exit`, else at
# the end. Other lines are never touched.
rc_add() {
    if [ ! -e "$RC" ] && [ ! -L "$RC" ]; then
        printf '#!/bin/sh\n%s\n' "$(rc_line)" >"$WORK/rc" || die "cannot write to $WORK"
        put "$WORK/rc" "$RC" 755
        : >"$WORK/created"
        put "$WORK/created" "$RC_CREATED" 644
        say "created $RC"
        return 0
    fi
    awk -v line="$(rc_line)" -v mark="$PZEM_MARK" '
        function ours(s) { sub(/[ \t\r]+$/, "", s); return substr(s, length(s) - length(mark) + 1) == mark }
        { l[NR] = $0; if (!first && ours($0)) first = NR }
        END {
            n = NR
            if (first) {
                for (i = 1; i <= n; i++) if (i == first) print line; else if (!ours(l[i])) print l[i]
                exit
            }
            last = 0
            for (i = n; i >= 1; i--) if (l[i] !~ /^[ \t]*(#.*)?$/) { last = i; break }
            at = (last && l[last] ~ /^[ \t]*exit([ \t]+[0-9]+)?[ \t]*;?[ \t]*$/) ? last : n + 1
            for (i = 1; i <= n; i++) { if (i == at) print line; print l[i] }
            if (at == n + 1) print line
        }' "$RC" >"$WORK/rc" || die "cannot read $RC"
    rc_write
    if [ ! -x "$RC" ]; then
        chmod a+x "$RC" || die "cannot chmod $RC"
        warn "made $RC executable: Venus runs it at boot only then"
    fi
}

# rc_remove: remove our line; remove the file if we created it and only the shebang is left.
rc_remove() {
    [ -f "$RC" ] || return 0
    awk -v mark="$PZEM_MARK" '{ s = $0; sub(/[ \t\r]+$/, "", s); if (substr(s, length(s) - length(mark) + 1) != mark) print }' \
        "$RC" >"$WORK/rc" || die "cannot read $RC"
    if [ -f "$RC_CREATED" ] && ! grep -v '^#!' "$WORK/rc" | grep -q '[^[:space:]]'; then
        rm -f "$RC" || die "cannot remove $RC"
        say "removed $RC (it was ours)"
        return 0
    fi
    rc_write
}

# rc_write: $WORK/rc becomes /data/rc.local if it differs, keeping the file's mode.
rc_write() {
    cmp -s "$WORK/rc" "$RC" && return 0
    if ! { cp -p "$RC" "$RC.pzem-new" && cat "$WORK/rc" >"$RC.pzem-new" && mv -f "$RC.pzem-new" "$RC"; }; then
        die "cannot write $RC"
    fi
    say "updated $RC"
}

# --- the fixed services (daemontools, linked into /service) --------------------------

# link_service NAME: /service/NAME -> $PV/service/NAME.
link_service() {
    dir=$PV/service/$1
    link=$SERVICE/$1
    if [ -L "$link" ]; then
        [ "$(readlink "$link")" = "$dir" ] && return 0
        case $(readlink "$link") in
            "$PV"/*) rm -f "$link" ;;
            *)
                warn "$link is not ours (it points at $(readlink "$link")); $1 not started"
                return 0
                ;;
        esac
    elif [ -e "$link" ]; then
        warn "$link exists and is not ours; $1 not started"
        return 0
    fi
    [ -d "$SERVICE" ] || {
        warn "no $SERVICE directory; $1 not started"
        return 0
    }
    ln -s "$dir" "$link" || die "cannot link $link"
    say "enabled $1 ($link)"
}

# unlink_service NAME: remove /service/NAME if it is ours, and stop it.
unlink_service() {
    link=$SERVICE/$1
    [ -L "$link" ] || return 0
    target=$(readlink "$link")
    case $target in
        "$PV"/*) ;;
        *) return 0 ;;
    esac
    rm -f "$link" || die "cannot remove $link"
    if live && command -v svc >/dev/null 2>&1 && [ -d "$target" ]; then
        svc -dx "$target" "$target/log" 2>/dev/null || true
    fi
    say "disabled $1"
}

# --- the parts outside /data, put back at every boot ---------------------------------

# apply: everything reapply.sh does at boot, install.sh after staging the files.
# With a bad [install] section it still restores what does not depend on it (pzem-dbus
# under serial-starter), leaves the services and the pin as they are, and returns 1.
apply() {
    config_ok=1
    read_install || config_ok=0

    if [ ! -e "$CONF" ] && [ -f "$PV/pzem.conf.example" ]; then
        put "$PV/pzem.conf.example" "$CONF" 644
        say "created $CONF (a commented example)"
    fi

    TEMPLATE_CHANGED=0
    for f in run log/run; do
        put "$PV/templates/pzem-dbus/$f" "$TEMPLATE/$f" 755 rootfs
        [ "$PUT" = 1 ] && TEMPLATE_CHANGED=1
    done
    [ "$TEMPLATE_CHANGED" = 1 ] && say "service template $TEMPLATE written"

    ss_apply
    [ "$SS_CHANGED" = 1 ] && say "$SS_OURS written"
    if live && [ "$TEMPLATE_CHANGED$SS_CHANGED" != 00 ] && [ -d "$SERVICE/serial-starter" ]; then
        svc -t "$SERVICE/serial-starter" && say "restarted serial-starter"
    fi

    [ "$config_ok" = 1 ] || {
        warn "$CONF: the [install] section above is wrong; the fixed services and the adapter pin were left as they were"
        return 1
    }

    serials=$(pinned)
    UDEV_CHANGED=0
    if [ -n "$serials" ]; then
        {
            sed -n '/^#/p' "$PV/templates/udev.rules"
            for s in $serials; do
                sed -e '/^#/d' -e "s|@SERIAL@|$s|g" "$PV/templates/udev.rules"
            done
        } >"$WORK/udev" || die "cannot read $PV/templates/udev.rules"
        put "$WORK/udev" "$UDEV_RULE" 644 rootfs
        UDEV_CHANGED=$PUT
        [ "$PUT" = 1 ] && say "udev rule $UDEV_RULE: the adapter(s) $serials always run pzem-dbus"
    else
        drop "$UDEV_RULE" rootfs
        UDEV_CHANGED=$GONE
        [ "$GONE" = 1 ] && say "removed $UDEV_RULE"
    fi
    if live && [ "$UDEV_CHANGED" = 1 ] && command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules || warn "udevadm control --reload-rules failed"
        say "the adapter pin applies when the adapter is plugged in again, or at the next boot"
    fi

    for name in $PZEM_FIXED_SERVICES; do
        if ! enabled "$name"; then
            unlink_service "$name"
        elif [ -d "$PV/service/$name" ]; then
            link_service "$name"
        else
            warn "$name = yes in $CONF, but this bundle has no $name binary: it is not started"
            unlink_service "$name"
        fi
    done
    return 0
}
