"""A throwaway PostgreSQL server, for the tests of examples/postgres_pool.py.

:func:`start` runs ``initdb`` on a temporary data directory and starts
``postgres`` on it as a child process, listening on 127.0.0.1 on a free port
(no Unix socket); :meth:`Server.stop` stops it by its PID and removes the
directory. As root, both run as ``nobody``: PostgreSQL refuses to run as root.

The binaries are those ``make postgres`` (tools/postgres.sh) provides, looked
for in the same order: ``$ANYGATE_POSTGRES_BIN``, the installed Debian package
(``/usr/lib/postgresql/<newest>/bin``), then the script's unpacked copy. When
none is there, :func:`start` raises :exc:`NoServer`, saying what is missing:
the tests fail with it, they are never skipped.

Readiness is not polled with sleeps: a thread reads the server's log as it is
written, and :func:`start` waits, with a deadline, for the line saying it is
ready to accept connections.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

#: The line that postgres logs once it accepts connections.
READY = "database system is ready to accept connections"
#: Seconds for initdb, and then for the server to be ready.
START_TIMEOUT = 60
#: Trusts every local connection; the C locale, which needs no locale installed.
INITDB_OPTIONS = ("--auth=trust", "--no-locale", "--encoding=UTF8", "--no-sync")
#: TCP on 127.0.0.1 only, no Unix socket; no fsync, no JIT (no LLVM needed).
SERVER_OPTIONS = ("-k", "", "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "jit=off")
#: Where an unpacked copy's shared libraries are, below its root.
LIB_DIRS = ("usr/lib/*-linux-gnu", "lib/*-linux-gnu")
#: Seconds for a fast shutdown (SIGINT) before SIGKILL.
STOP_TIMEOUT = 30


class NoServer(Exception):
    """No PostgreSQL server could be provided; the message says what is missing."""


def copy_dir() -> Path:
    """Where ``make postgres`` unpacks Debian's packages (see tools/postgres.sh)."""
    if "ANYGATE_POSTGRES" in os.environ:
        return Path(os.environ["ANYGATE_POSTGRES"])
    if os.geteuid() == 0:
        return Path("/var/cache/anygate/postgres")
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache, "anygate", "postgres")


def newest_bin(root: Path) -> Path | None:
    found = [p for p in (root / "usr/lib/postgresql").glob("*/bin") if p.name == "bin"]
    found.sort(key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")])
    return found[-1] if found else None


def find_binaries() -> tuple[Path, dict[str, str]]:
    """The bin directory holding initdb and postgres, and the environment they need."""
    env = dict(os.environ, LC_ALL="C")
    env.pop("PGDATA", None)
    looked: list[str] = []
    candidates: list[tuple[Path | None, Path | None]] = []
    if os.environ.get("ANYGATE_POSTGRES_BIN"):
        candidates.append((Path(os.environ["ANYGATE_POSTGRES_BIN"]), None))
    else:
        candidates.append((newest_bin(Path("/")), None))
        copy_root = copy_dir() / "root"
        candidates.append((newest_bin(copy_root), copy_root))
        looked = ["/usr/lib/postgresql/*/bin", f"{copy_root}/usr/lib/postgresql/*/bin"]
    for candidate, root in candidates:
        if candidate is None or not (candidate / "initdb").exists():
            continue
        if root is not None:
            # The libraries unpacked beside the server (see tools/postgres.sh).
            libs = [str(p) for pattern in LIB_DIRS for p in root.glob(pattern)]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                [*libs, *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
            )
        return candidate, env
    where = os.environ.get("ANYGATE_POSTGRES_BIN") or " nor in ".join(looked)
    raise NoServer(
        f"no PostgreSQL initdb in {where}: run `make postgres` (tools/postgres.sh), which "
        "fetches Debian's package, or set ANYGATE_POSTGRES_BIN to a PostgreSQL bin directory"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    data: Path
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def output(self) -> str:
        return "".join(self.log)

    def stop(self) -> None:
        """Stop the server by its PID (a fast shutdown), and remove its data."""
        try:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGINT)
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.kill(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            if self.reader is not None:
                self.reader.join(STOP_TIMEOUT)  # the log's end: postgres has exited
            if self.process.stdout is not None:
                self.process.stdout.close()
        finally:
            shutil.rmtree(self.data.parent, ignore_errors=True)


def start() -> Server:
    """Run initdb and start a server on a free port; return once it accepts connections."""
    bin_dir, env = find_binaries()
    as_user: dict[str, object] = {}
    top = Path(tempfile.mkdtemp(prefix="anygate-postgres-"))
    data = top / "data"
    if os.geteuid() == 0:
        # initdb and postgres refuse root: both run as nobody, who owns the directory.
        nobody = pwd.getpwnam("nobody")
        os.chown(top, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    try:
        initdb = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", *INITDB_OPTIONS],
            cwd=top,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
            **as_user,  # type: ignore[call-overload]
        )
        if initdb.returncode != 0:
            raise NoServer(f"{bin_dir}/initdb failed:\n{initdb.stdout}{initdb.stderr}")  # noqa: TRY301
        port = free_port()
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), *SERVER_OPTIONS],
            cwd=top,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **as_user,  # type: ignore[call-overload]
        )
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        raise
    server = Server(process, port, data)
    ready = threading.Event()

    def read_log() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.log.append(line)
            if READY in line:
                ready.set()
        ready.set()  # the server exited

    server.reader = threading.Thread(target=read_log, name="postgres log", daemon=True)
    server.reader.start()
    if not ready.wait(START_TIMEOUT) or process.poll() is not None:
        server.stop()
        raise NoServer(
            f"{bin_dir}/postgres was not ready within {START_TIMEOUT} s "
            f"(exit status {process.poll()}):\n{server.output()}"
        )
    return server
