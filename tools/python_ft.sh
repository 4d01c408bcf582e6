#!/usr/bin/env bash
# A free-threaded CPython 3.13 for `make matrix`, as a pyenv version "3.13.Nt".
#
#   tools/python_ft.sh          (what `make python-ft` runs)
#
# Reuses an installed pyenv 3.13.*t. Otherwise it builds one with pyenv, which
# needs CPython's source tarball. Where pyenv can reach python.org it downloads
# it itself (`pyenv install 3.13t`); where it cannot (this project's machines
# reach only PyPI and Debian), the tarball comes from Debian: the orig tarball
# of Debian trixie's python3.13 source package is upstream's Python-3.13.N.tar.xz,
# byte for byte. apt fetches it with a configuration of its own under
# build/python-ft, leaving the system's sources untouched, and pyenv finds it in
# its cache, checks it against the sha256 in its own definition, and builds
# offline: 2 to 3 minutes on 2 cores.
#
# Prints the interpreter's bin directory last; fails loudly if it cannot.
set -euo pipefail

banner=$(printf '!%.0s' {1..72})
die() {
    printf '\n%s\n!! make python-ft: %s\n%s\n' "$banner" "$*" "$banner" >&2
    exit 1
}
say() { printf 'make python-ft: %s\n' "$*" >&2; }

if ! command -v pyenv >/dev/null; then
    # Installed but not on the PATH, as in a shell that never ran pyenv's init.
    for bin in "${PYENV_ROOT:-}/bin" "$HOME/.pyenv/bin"; do
        if [ -x "$bin/pyenv" ]; then PATH=$bin:$PATH; break; fi
    done
fi
command -v pyenv >/dev/null || die "pyenv is not installed (nor on the PATH): a free-threaded CPython cannot be built"
pyenv_root=$(pyenv root)

# True if $1 is a free-threaded CPython whose GIL really is off with PYTHON_GIL=0.
free_threaded() {
    PYTHON_GIL=0 "$1" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null
}

installed() {
    local dir found=
    for dir in $(ls -d "$pyenv_root"/versions/3.13.*t 2>/dev/null | sort -V); do
        if free_threaded "$dir/bin/python3"; then found=$dir; fi
    done
    [ -n "$found" ] && echo "$found"
}

if dir=$(installed); then
    say "reusing $dir"
    echo "$dir/bin"
    exit 0
fi

# Headers that CPython's build needs for the modules pip and the tests use
# (ssl, zlib, ctypes, ...), installed only when missing.
build_deps=(build-essential libssl-dev zlib1g-dev libbz2-dev libreadline-dev
    libsqlite3-dev libncurses-dev libffi-dev liblzma-dev uuid-dev xz-utils)
if command -v dpkg-query >/dev/null; then
    missing=()
    for pkg in "${build_deps[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing CPython's build dependencies: ${missing[*]}"
        [ "$(id -u)" = 0 ] || die "missing build dependencies (${missing[*]}): run as root or apt-get install them"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
            || die "could not install ${missing[*]}"
    fi
fi

version=
if command -v apt-get >/dev/null; then
    apt_dir=$(pwd)/build/python-ft
    rm -rf "$apt_dir"
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/src"
    cat >"$apt_dir/sources.list.d/trixie-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o "APT::Sandbox::User=$(id -un)" -qq)
    say "fetching python3.13's source package from Debian trixie"
    if apt-get "${apt_opts[@]}" update \
        && (cd "$apt_dir/src" && apt-get "${apt_opts[@]}" source --download-only python3.13); then
        orig=$(ls "$apt_dir"/src/python3.13_3.13.*.orig.tar.xz 2>/dev/null | head -n 1)
        if [ -n "$orig" ]; then
            version=$(basename "$orig")
            version=${version#python3.13_}
            version=${version%.orig.tar.xz}
            # Not `grep -q`: it would stop reading, and pipefail would take the SIGPIPE as a failure.
            pyenv install --list | grep -x " *${version}t" >/dev/null \
                || die "Debian has CPython $version, which $(pyenv --version) cannot build as ${version}t: update pyenv"
            mkdir -p "$pyenv_root/cache"
            # pyenv checks it against its definition's sha256 before using it.
            cp "$orig" "$pyenv_root/cache/Python-$version.tar.xz"
        else
            say "Debian's python3.13 source package has no orig tarball"
        fi
    else
        say "apt could not fetch python3.13's source from Debian trixie"
    fi
fi

target=${version:+${version}t}
target=${target:-3.13t}
say "building CPython $target with pyenv (2 to 3 minutes on 2 cores)"
start=$SECONDS
pyenv install --skip-existing "$target" \
    || die "pyenv install $target failed: see its log above. Without python.org, pyenv needs Python-3.13.N.tar.xz in $pyenv_root/cache"
say "built $target in $((SECONDS - start)) s"

dir=$(installed) || die "pyenv installed $target, but no free-threaded 3.13 runs with its GIL off"
echo "$dir/bin"
