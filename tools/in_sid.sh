#!/usr/bin/env bash
# Runs a command inside `make python-sid`'s Debian sid chroot, in the current
# directory, which the chroot sees at the same path:
#
#   tools/in_sid.sh python3.14 -m venv .nox/some-env
#   tools/in_sid.sh .nox/some-env/bin/python -m pytest
#
# So a virtual environment made in the work tree, and the wheel built there,
# have the same paths inside the chroot and out. The environment is passed on
# as it is. Needs root.
#
# Everything it mounts (the work tree, /proc, /dev, /sys, a fresh /tmp) is
# mounted in a mount namespace of its own, which ends with the command: nothing
# is left mounted on the host, so removing the chroot or the work tree later
# can never reach through a stale bind mount.
set -euo pipefail

root=${PYTHON_SID:-${XDG_CACHE_HOME:-$HOME/.cache}/anygate/python-sid}/root

if [ "${_ANYGATE_IN_SID_NS:-}" != "$root" ]; then
    [ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
    [ -x "$root/usr/bin/env" ] || { echo "in_sid.sh: no chroot in $root: run \`make python-sid\`" >&2; exit 127; }
    [ "$(id -u)" = 0 ] || { echo "in_sid.sh: needs root, for chroot" >&2; exit 126; }
    _ANYGATE_IN_SID_NS=$root exec unshare --mount --propagation private -- bash "$0" "$@"
fi
unset _ANYGATE_IN_SID_NS

# In the new mount namespace: what the command needs, then the chroot.
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t tmpfs tmpfs "$root/tmp"
logical=$(pwd -L)
physical=$(pwd -P)
for dir in "$physical" "$logical"; do
    [ "$dir" != / ] || { echo "in_sid.sh: run it from a work tree, not /" >&2; exit 2; }
    if ! mountpoint -q "$root$dir"; then
        mkdir -p "$root$dir"
        mount --bind "$physical" "$root$dir"
    fi
done
exec chroot "$root" /usr/bin/env --chdir="$logical" "$@"
