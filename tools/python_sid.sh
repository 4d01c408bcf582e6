#!/usr/bin/env bash
# CPython 3.14 and 3.15 for `make matrix`, from Debian sid, in a chroot.
#
#   tools/python_sid.sh          (what `make python-sid` runs)
#
# pyenv cannot build them on this project's machines (its definitions stop
# short of the releases, and python.org is out of reach), but Debian sid ships
# them as binary packages: python3.14 and python3.15. Those need sid's C
# library, so they run inside a minimal sid system of their own, made here with
# mmdebstrap (from the host's Debian packages) in
#
#   $PYTHON_SID/root     (PYTHON_SID defaults to ~/.cache/anygate/python-sid)
#
# outside the work tree, so that every clone on the machine reuses it, as every
# clone reuses pyenv's 3.13t. tools/in_sid.sh runs a command in it; the
# noxfile uses that for a version that neither pyenv nor the system has.
#
# Idempotent: a chroot whose interpreters run is reused (about a second); one
# that is missing or broken is built afresh (under a minute). Needs root and apt.
# Prints each interpreter's version last; fails loudly if it cannot.
set -euo pipefail

versions=(3.14 3.15)
suite=sid
mirror=http://deb.debian.org/debian

banner=$(printf '!%.0s' {1..72})
die() {
    printf '\n%s\n!! make python-sid: %s\n%s\n' "$banner" "$*" "$banner" >&2
    exit 1
}
say() { printf 'make python-sid: %s\n' "$*" >&2; }

sid=${PYTHON_SID:-${XDG_CACHE_HOME:-$HOME/.cache}/anygate/python-sid}
root=$sid/root
here=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" = 0 ] || die "needs root (for mmdebstrap and chroot); run it as root"
command -v apt-get >/dev/null || die "needs apt-get: Debian sid's packages are installed with apt"

# The host's resolver and CA bundle: pip inside the chroot reaches PyPI as the
# host does (through the same certificate authorities, as PIP_CERT may name).
# Refreshed on every run, as a machine's may change.
refresh_etc() {
    cp -L /etc/resolv.conf "$1/etc/resolv.conf"
    mkdir -p "$1/etc/ssl/certs"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp -L /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"
    fi
}

# True if every interpreter runs in the chroot, with what the matrix needs of it:
# venv with ensurepip (for the sessions' environments) and ssl (for pip).
works() {
    local v
    for v in "${versions[@]}"; do
        PYTHON_SID=$sid bash "$here/in_sid.sh" "python$v" -c 'import ensurepip, ssl, venv' \
            >/dev/null 2>&1 || return 1
    done
}

report() {
    local v
    for v in "${versions[@]}"; do
        printf 'python%s in %s: %s\n' "$v" "$root" "$(PYTHON_SID=$sid bash "$here/in_sid.sh" "python$v" -VV)"
    done
}

# Mounts below the chroot would make rm -rf reach outside it: tools/in_sid.sh
# mounts only in a mount namespace of its own, so there should never be any.
no_mounts_under() {
    if findmnt -rn -o TARGET | grep -F -- "$1" >/dev/null; then
        die "something is mounted under $1; unmount it (findmnt | grep $1) before rebuilding"
    fi
}

if [ -d "$root" ]; then
    refresh_etc "$root"
    if works; then
        say "reusing $root"
        report
        exit 0
    fi
    say "$root is incomplete or broken: building it afresh"
    no_mounts_under "$root"
    rm -rf "$root"
fi

if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null \
        || die "could not install mmdebstrap with apt-get"
fi

packages=()
for v in "${versions[@]}"; do packages+=("python$v" "python$v-venv"); done
packages_csv=$(IFS=,; echo "${packages[*]}")

# Built beside its final place and renamed into it, so that a build cut short
# leaves no half chroot that would pass for one.
new=$sid/root.new
no_mounts_under "$new"
rm -rf "$new"
mkdir -p "$sid"
say "building a Debian $suite chroot with ${packages[*]} in $root"
start=$SECONDS
# sid's index carries a Valid-Until date that a mirror frozen in time has passed.
# apt's _apt user cannot reach a chroot under /root: apt downloads as root, as
# it would anyway, without warning that it does.
mmdebstrap --mode=root --variant=minbase \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --aptopt='APT::Sandbox::User "root"' \
    --include="$packages_csv" \
    "$suite" "$new" "$mirror" \
    || die "mmdebstrap could not build a $suite chroot with ${packages[*]}: see its log above"
refresh_etc "$new"
mv "$new" "$root"
say "built in $((SECONDS - start)) s"

works || die "built $root, but its interpreters do not run there (try: tools/in_sid.sh python3.14 -c 'import ensurepip, ssl, venv')"
report
