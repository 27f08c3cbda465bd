# shellcheck shell=bash
# scripts/lib.sh: helpers sourced by scripts/test and scripts/build-venus.
#
# Every ensure_* function is idempotent and cheap when its thing is already there, so the
# scripts can call them on every run. They print short progress lines to stderr.
# See docs/building.md and shared/docs/build-notes.md for why things are done this way.

# Sourced only: refuse to run as a program.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "scripts/lib.sh is meant to be sourced, not run" >&2
    exit 2
fi
set -euo pipefail

PZEM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Cross targets and the glibc each is pinned to (cargo-zigbuild's ".2.xx" target suffix).
# Venus OS v2.80-v3.55 ship glibc 2.31, v3.60+ (with aarch64 machines) 2.39.
# shellcheck disable=SC2034  # these are used by the scripts that source this file
{
    PZEM_ARMV7=armv7-unknown-linux-gnueabihf
    PZEM_ARMV7_GLIBC=2.26
    PZEM_AARCH64=aarch64-unknown-linux-gnu
    PZEM_AARCH64_GLIBC=2.28
}
# The newest GLIBC_x.y symbol version a shipped binary may need.
PZEM_GLIBC_MAX="${PZEM_GLIBC_MAX:-2.31}"

# Pinned PyPI versions of the zig toolchain (build-notes section 5c).
PZEM_ZIGLANG_VERSION=0.17.1
PZEM_ZIGBUILD_VERSION=0.24.1

log() { printf '[pzem] %s\n' "$*" >&2; }
die() { printf '[pzem] error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root (CI), else through sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Seconds since an $EPOCHREALTIME stamp, with one decimal: elapsed_since "$t0" -> "12.3".
elapsed_since() {
    local start=${1/./} now=${EPOCHREALTIME/./}
    local ds=$(((now - start) / 100000))
    printf '%d.%d' $((ds / 10)) $((ds % 10))
}

_PZEM_APT_UPDATED=0

# ensure_apt PKG...: install the Debian packages that are not installed yet.
# Runs `apt-get update` at most once per script run, and only when something is missing.
# Never enables a foreign dpkg architecture (multiarch breaks apt-get update here,
# build-notes section 5a); the *-cross packages are all we need.
ensure_apt() {
    local pkg status missing=()
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == installed ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0

    local t0=$EPOCHREALTIME
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
    if ((_PZEM_APT_UPDATED == 0)); then
        log "apt: updating package lists"
        # A failing update (a flaky mirror index) need not be fatal: the install below
        # either works from the lists we have or fails with apt's own message.
        as_root "${apt[@]}" update -qq >&2 || log "apt: 'apt-get update' failed; trying the install anyway"
        _PZEM_APT_UPDATED=1
    fi
    log "apt: installing ${missing[*]}"
    as_root "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
    log "apt: done in $(elapsed_since "$t0") s"
}

# ensure_rust_targets [TRIPLE...]: add rust std for the cross targets (default: armv7 and
# aarch64) to the toolchain that rust-toolchain.toml selects.
ensure_rust_targets() {
    local want=("$@") have t missing=()
    ((${#want[@]})) || want=("$PZEM_ARMV7" "$PZEM_AARCH64")
    have=$(cd "$PZEM_ROOT" && rustup target list --installed)
    for t in "${want[@]}"; do
        grep -qxF "$t" <<<"$have" || missing+=("$t")
    done
    ((${#missing[@]} == 0)) && return 0
    log "rustup: adding targets ${missing[*]}"
    (cd "$PZEM_ROOT" && rustup target add "${missing[@]}") >&2
}

# ensure_rust_components [NAME...]: rustfmt and clippy by default.
ensure_rust_components() {
    local want=("$@") have c missing=()
    ((${#want[@]})) || want=(rustfmt clippy)
    have=$(cd "$PZEM_ROOT" && rustup component list --installed)
    for c in "${want[@]}"; do
        grep -q "^$c-" <<<"$have" || grep -qxF "$c" <<<"$have" || missing+=("$c")
    done
    ((${#missing[@]} == 0)) && return 0
    log "rustup: adding components ${missing[*]}"
    (cd "$PZEM_ROOT" && rustup component add "${missing[@]}") >&2
}

# ensure_zig: ziglang + cargo-zigbuild from PyPI in a private venv, put first on PATH.
# cargo-zigbuild then finds zig as `zig` on PATH (a link into the venv's ziglang package).
ensure_zig() {
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/pzem-venus"
    local venv="$cache/zig-venv"
    local spec="ziglang==$PZEM_ZIGLANG_VERSION cargo-zigbuild==$PZEM_ZIGBUILD_VERSION"

    if ! _pzem_zig_ok "$venv" "$spec"; then
        mkdir -p "$cache"
        # Another run may be installing right now: take turns.
        (
            flock 9
            if ! _pzem_zig_ok "$venv" "$spec"; then
                local t0=$EPOCHREALTIME
                log "zig: installing $spec into $venv"
                rm -rf "$venv"
                python3 -m venv "$venv" >&2 ||
                    die "python3 -m venv failed (on Debian's python3: apt-get install python3-venv)"
                # shellcheck disable=SC2086  # $spec is two words on purpose
                "$venv/bin/pip" install -q --disable-pip-version-check $spec >&2
                local zig
                zig=$("$venv/bin/python3" -c \
                    'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
                [[ -x "$zig" ]] || die "zig: no executable at $zig"
                ln -sf "$zig" "$venv/bin/zig"
                printf '%s\n' "$spec" >"$venv/.pzem-installed"
                log "zig: done in $(elapsed_since "$t0") s"
            fi
        ) 9>"$cache/zig-venv.lock"
    fi
    case ":$PATH:" in
        *":$venv/bin:"*) ;;
        *) PATH="$venv/bin:$PATH" ;;
    esac
    export PATH
}

_pzem_zig_ok() {
    local venv=$1 spec=$2
    [[ -x "$venv/bin/cargo-zigbuild" && -x "$venv/bin/zig" ]] &&
        [[ "$(cat "$venv/.pzem-installed" 2>/dev/null)" == "$spec" ]]
}

# The names of the crate's [[bin]] targets, one a line.
pzem_bin_names() {
    (cd "$PZEM_ROOT" && cargo metadata --no-deps --format-version 1 --locked) |
        python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]:
            print(t["name"])'
}

# All GLIBC_x.y versions an ELF file refers to, oldest first (no output: none).
glibc_versions() {
    readelf --version-info -W "$1" | { grep -o 'GLIBC_[0-9][0-9.]*' || true; } |
        sed 's/^GLIBC_//' | sort -uV
}

# The newest GLIBC version an ELF file needs, or "none".
glibc_max() {
    local v
    v=$(glibc_versions "$1" | tail -n 1)
    printf '%s\n' "${v:-none}"
}

# check_glibc BIN MAX: fail, naming the binary, the versions and their symbols,
# when BIN needs a GLIBC symbol version newer than MAX.
check_glibc() {
    local bin=$1 max=$2 v vers syms bad=0
    [[ -f "$bin" ]] || { log "glibc guard: $bin does not exist"; return 1; }
    vers=$(glibc_versions "$bin")
    for v in $vers; do
        [[ "$(printf '%s\n%s\n' "$v" "$max" | sort -V | tail -n 1)" == "$max" ]] && continue
        syms=$(readelf --dyn-syms -W "$bin" | grep -oE "[^ ]+@GLIBC_${v//./\\.}( |$)" |
            sed 's/@.*//' | sort -u | paste -sd, - || true)
        log "glibc guard: $bin needs GLIBC_$v, newer than the allowed GLIBC_$max (symbols: ${syms:-?})"
        bad=1
    done
    if ((bad)); then
        return 1
    fi
    log "glibc guard: ok $(basename "$bin"): newest GLIBC_$(glibc_max "$bin") <= GLIBC_$max"
}
