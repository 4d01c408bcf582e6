#!/usr/bin/env bash
# A PostgreSQL server's binaries for the tests of examples/postgres_pool.py.
#
#   tools/postgres.sh          (what `make postgres` runs; `make test` runs it first)
#
# The tests (tests/test_postgres.py, through tests/postgres_server.py) start a
# server of their own, as a child process on a temporary data directory and a
# free port, and stop it by its PID: all they need is initdb and postgres.
# They take them from the first of:
#
#   $ANYGATE_POSTGRES_BIN                       if set
#   /usr/lib/postgresql/<newest>/bin            Debian's postgresql-<version>, if installed
#   $ANYGATE_POSTGRES/root/usr/lib/postgresql/<version>/bin    this script's copy
#
# ANYGATE_POSTGRES defaults to ~/.cache/anygate/postgres, outside the work tree,
# so that every clone on the machine reuses it; as root, to
# /var/cache/anygate/postgres, since the server then runs as nobody, who cannot
# enter /root.
#
# When neither is there, the copy is made from Debian's packages: the
# postgresql-<version> that the `postgresql` package of the machine's apt
# sources depends on, its client package, and the libraries they depend on that
# the machine lacks. apt-get downloads them, with a configuration of its own in
# $ANYGATE_POSTGRES/apt (no root needed; the system's apt state is left alone),
# and `dpkg-deb -x` unpacks them. Nothing is installed on the system and no
# service is started.
#
# Idempotent: binaries that run are reused (well under a second); a missing or
# broken copy is made afresh (about 20 s: about 30 MB to download).
# Prints the bin directory last; fails loudly if it cannot.
set -euo pipefail

banner=$(printf '!%.0s' {1..72})
die() {
    printf '\n%s\n!! make postgres: %s\n%s\n' "$banner" "$*" "$banner" >&2
    exit 1
}
say() { printf 'make postgres: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
    default_dir=/var/cache/anygate/postgres
else
    default_dir=${XDG_CACHE_HOME:-$HOME/.cache}/anygate/postgres
fi
dir=${ANYGATE_POSTGRES:-$default_dir}
root=$dir/root

# The library directories of an unpacked copy, for LD_LIBRARY_PATH.
lib_path() {
    local d path=
    for d in "$1"/usr/lib/*-linux-gnu "$1"/lib/*-linux-gnu; do
        [ -d "$d" ] && path=${path:+$path:}$d
    done
    printf '%s' "$path"
}

# True if initdb and postgres in bin directory $1 run (with the libraries of root $2, if any).
runs() {
    local lib
    lib=$(lib_path "${2:-/nonexistent}")
    [ -x "$1/initdb" ] && [ -x "$1/postgres" ] || return 1
    LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$1/initdb" --version >/dev/null 2>&1 \
        && LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$1/postgres" --version >/dev/null 2>&1
}

report() {
    local lib
    lib=$(lib_path "${2:-/nonexistent}")
    say "$(LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$1/postgres" --version)"
    printf '%s\n' "$1"
}

if [ -n "${ANYGATE_POSTGRES_BIN:-}" ]; then
    runs "$ANYGATE_POSTGRES_BIN" || die "ANYGATE_POSTGRES_BIN=$ANYGATE_POSTGRES_BIN has no initdb and postgres that run"
    say "using ANYGATE_POSTGRES_BIN"
    report "$ANYGATE_POSTGRES_BIN"
    exit 0
fi

newest() { { ls -d "$1"/usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1; }

# ANYGATE_POSTGRES_FETCH=1 ignores the installed server (to try the fetch out).
system_bin=$(newest "")
if [ -z "${ANYGATE_POSTGRES_FETCH:-}" ] && [ -n "$system_bin" ] && runs "$system_bin"; then
    say "using the installed $system_bin"
    report "$system_bin"
    exit 0
fi

copy_bin=$(newest "$root")
if [ -n "$copy_bin" ] && runs "$copy_bin" "$root"; then
    say "reusing $root"
    report "$copy_bin" "$root"
    exit 0
fi

command -v apt-get >/dev/null || die "no PostgreSQL server, and no apt-get to fetch Debian's: install PostgreSQL, or set ANYGATE_POSTGRES_BIN to its bin directory"
command -v dpkg-deb >/dev/null || die "no dpkg-deb to unpack Debian's PostgreSQL packages"

apt_dir=$dir/apt
rm -rf "$apt_dir"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
# The machine's sources, with lists and a cache of our own; the installed
# packages (dpkg's status) are the system's, so that apt knows what is there.
apt_opts=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Sandbox::User=$(id -un)" -qq)
say "updating apt's package lists in $apt_dir"
apt-get "${apt_opts[@]}" update || die "apt-get update failed: are Debian's archives reachable?"

version=$(apt-cache "${apt_opts[@]}" depends postgresql 2>/dev/null \
    | sed -n 's/^ *Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n 1)
[ -n "$version" ] || die "the machine's apt sources have no \`postgresql\` package depending on a postgresql-<version>"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep 'ok installed' >/dev/null; }

# The server, its client (pg_isready, psql) and libpq, then the libraries they
# depend on, recursively, that the machine lacks. Only lib* packages are
# followed: the rest (postgresql-common's perl scripts, debconf, ssl-cert,
# locales, tzdata) serve a system install, which this is not.
want0=("postgresql-$version" "postgresql-client-$version" libpq5)
want=("${want0[@]}")
seen=" "
fetch=()
while [ ${#want[@]} -gt 0 ]; do
    pkg=${want[0]}
    want=("${want[@]:1}")
    case $seen in *" $pkg "*) continue ;; esac
    seen="$seen$pkg "
    # The first three are fetched even if installed (ANYGATE_POSTGRES_FETCH=1).
    case " ${want0[*]} " in *" $pkg "*) ;; *) installed "$pkg" && continue ;; esac
    fetch+=("$pkg")
    while read -r dep; do
        case $dep in lib*) want+=("$dep") ;; esac
    done < <(apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "$pkg" 2>/dev/null \
        | sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([^<][^ :]*\).*$/\2/p')
done

say "downloading Debian's ${fetch[*]}"
start=$SECONDS
(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "${fetch[@]}") \
    || die "apt-get download failed for ${fetch[*]}"

# Unpacked beside its final place and renamed into it, so that a copy cut
# short never passes for one.
new=$dir/root.new
rm -rf "$new"
mkdir -p "$new"
for deb in "$apt_dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$new" || die "dpkg-deb could not unpack $deb"
done
new_bin=$(newest "$new")
[ -n "$new_bin" ] || die "the packages held no usr/lib/postgresql/*/bin"

missing=$(LD_LIBRARY_PATH=$(lib_path "$new") ldd "$new_bin/postgres" "$new_bin/initdb" 2>/dev/null \
    | sed -n 's/^[[:space:]]*\([^ ]*\) => not found.*/\1/p' | sort -u | tr '\n' ' ')
[ -z "$missing" ] || die "unpacked PostgreSQL $version, but these libraries are still missing: $missing"
runs "$new_bin" "$new" || die "unpacked PostgreSQL $version in $new, but its initdb or postgres does not run"

rm -rf "$root" "$apt_dir"
mv "$new" "$root"
say "unpacked PostgreSQL $version in $root in $((SECONDS - start)) s"
report "$(newest "$root")" "$root"
