"""The test suite on every supported Python, against the installed wheel.

Run by ``make matrix``, which builds the wheel into ``build/matrix`` and puts
each pyenv interpreter on the PATH. Each session installs that wheel, never the
source tree, so a packaging mistake fails the tests.

``3.13t`` is the free-threaded build (``make python-ft`` makes one); its session
runs the tests with the GIL off (``PYTHON_GIL=0``) and checks that it is.

``3.14`` and ``3.15`` are taken from the PATH (pyenv's, or the system's) where
they are; otherwise from the Debian sid chroot that ``make python-sid`` makes,
where each command of the session runs through ``tools/in_sid.sh``. Both run
twice: as they come (``PYTHON_THREAD_INHERIT_CONTEXT=0``), and with threads
inheriting the context of the code that starts them, which is free-threaded
3.14's default (``PYTHON_THREAD_INHERIT_CONTEXT=1``).

Each session checks that its interpreter is the build and has the flags its
name says, and records what it ran on in ``build/matrix/sessions/NAME.json``
for ``tools/matrix_summary.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nox
import nox.command

WHEELS = Path("build/matrix")
RAN_ON = WHEELS / "sessions"

# Debian sid's python3.14 and python3.15, in `make python-sid`'s chroot.
SID_VERSIONS = ("3.14", "3.15")
SID_ROOT = (
    Path(
        os.environ.get("PYTHON_SID")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "anygate/python-sid")
    )
    / "root"
)
IN_SID = ("bash", "tools/in_sid.sh")
# What a command inside the chroot finds on its PATH, after the session's environment.
SID_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Exits with the path of the anygate imported, unless it is the installed one.
FROM_THE_WHEEL = (
    "import anygate, sys; 'site-packages' in anygate.__file__ or sys.exit(anygate.__file__)"
)

# pytest-timeout fails a test that runs past pyproject's bound, but it cannot
# break every hang: its SIGALRM goes unhandled while uvloop waits in C. So the
# whole pytest run of a session is stopped past this bound (SIGTERM, then
# SIGKILL), and the session fails, rather than stall the matrix and CI. A
# session's run takes about 2 minutes on 2 cores.
PYTEST_TIME_LIMIT = 600
BOUNDED = ("timeout", "--kill-after=30", str(PYTEST_TIME_LIMIT))

# Prints, as JSON, what the interpreter is and which test dependencies it got.
RAN_ON_PROBE = "tools/ran_on.py"

# The sessions, in the order they run: (version, PYTHON_THREAD_INHERIT_CONTEXT).
# None leaves the variable out, for interpreters older than 3.14, which have no such flag.
MATRIX: list[tuple[str, str | None]] = [
    ("3.10", None),
    ("3.11", None),
    ("3.12", None),
    ("3.13", None),
    ("3.13t", None),
    ("3.14", "0"),
    ("3.15", "0"),
    ("3.14", "1"),
    ("3.15", "1"),
    # Free-threaded 3.14 (threads inherit their context by default there):
    # where pyenv has one, as on a machine that reaches python.org; skipped,
    # and reported as not tested, elsewhere.
    ("3.14t", None),
]
#: Sessions whose interpreter is optional: skipped, not failed, where it is missing.
OPTIONAL = {"3.14t"}

# A fresh environment each run: a reused one would keep a stale wheel of the same version.
nox.options.reuse_existing_virtualenvs = False


def session_name(version: str, inherit_context: str | None) -> str:
    return f"tests-{version}" + ("-inherit-context" if inherit_context == "1" else "")


def in_sid_chroot(version: str) -> bool:
    """Whether ``version`` comes from the sid chroot: only where the PATH has none."""
    return (
        version in SID_VERSIONS
        and shutil.which(f"python{version}") is None
        and (SID_ROOT / "usr/bin" / f"python{version}").exists()
    )


def tests(session: nox.Session, version: str, inherit_context: str | None) -> None:
    wheels = sorted(WHEELS.glob("anygate-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {WHEELS}, found {len(wheels)}: run `make matrix`")
    free_threaded = version.endswith("t")
    env: dict[str, str] = {}
    install_options: list[str] = []
    if free_threaded:
        env["PYTHON_GIL"] = "0"
        # The newest hypothesis has a Rust extension with no free-threaded wheel
        # for 3.13t, which cannot build without crates.io: take its newest wheel instead.
        install_options = ["--only-binary", "hypothesis"]
    if inherit_context is not None:
        # Set either way, so that the caller's environment cannot change what the name says.
        env["PYTHON_THREAD_INHERIT_CONTEXT"] = inherit_context

    python_command: tuple[str, ...]
    where: str | None
    if in_sid_chroot(version):
        # No environment of nox's: one made and used inside the chroot, at the
        # same path inside and out, through tools/in_sid.sh.
        venv = Path.cwd() / ".nox" / session.name
        session.run(*IN_SID, f"python{version}", "-m", "venv", "--clear", str(venv))
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv}/bin:{SID_PATH}"
        python_command = (*IN_SID, f"{venv}/bin/python")
        where = "Debian sid chroot (make python-sid)"
        package = session.run(
            *IN_SID, "dpkg-query", "-W", "-f", "${Version}", f"python{version}", silent=True
        )
        where += f", package python{version} {str(package).strip()}"
    else:
        python_command = ("python",)
        where = None  # the summary shows base_prefix: pyenv's or the system's

    def python(*args: str, **kwargs: Any) -> Any:
        return session.run(*python_command, *args, **kwargs)

    # The examples extra: tests/test_web_service.py serves examples/web_service.py.
    requirement = f"{wheels[0]}[test,examples]"
    python("-m", "pip", "install", *install_options, requirement, env=env, silent=True)

    # What it runs on, checked against the session's name, and recorded for the summary.
    output = python(RAN_ON_PROBE, env=env, silent=True)
    ran_on = json.loads(str(output).strip().splitlines()[-1])
    ran_on["where"] = where or ran_on["base_prefix"]
    RAN_ON.mkdir(parents=True, exist_ok=True)
    (RAN_ON / f"{session.name}.json").write_text(json.dumps(ran_on, indent=2) + "\n")
    session.log(f"ran on: {json.dumps(ran_on)}")
    wrong = []
    if not ran_on["version"].startswith(version.rstrip("t") + "."):
        wrong.append(f"Python {ran_on['version']}")
    # pyenv's 3.13t bin holds a python3.13 too: make sure each session got the build it names.
    if ran_on["free_threaded"] != free_threaded:
        wrong.append(f"free-threaded build: {ran_on['free_threaded']}")
    if free_threaded and ran_on["gil_enabled"] is not False:
        wrong.append("the GIL is enabled")
    if inherit_context is not None and ran_on["thread_inherit_context"] != int(inherit_context):
        wrong.append(f"sys.flags.thread_inherit_context is {ran_on['thread_inherit_context']}")
    if wrong:
        session.error(f"{session.name} did not get what its name says: {', '.join(wrong)}")

    if in_sid_chroot(version):
        # tests/test_postgres.py starts a PostgreSQL server: the host's (`make
        # postgres`, a prerequisite of `make matrix`) does not run in the
        # chroot, so the chroot gets sid's own, the same way.
        session.run(*IN_SID, "bash", "tools/postgres.sh", external=True)

    # The source tree must not shadow the wheel.
    python("-c", FROM_THE_WHEEL, env=env)
    pytest = (*BOUNDED, *python_command, "-m", "pytest", *session.posargs)
    try:
        session.run(*pytest, env=env, external=True)
    except nox.command.CommandFailed as failure:
        # timeout's own codes: it sent SIGTERM (124), or had to send SIGKILL (137).
        if failure.return_code in (124, 137):
            session.error(f"pytest ran past {PYTEST_TIME_LIMIT} s and was stopped; see its log")
        raise


def define(version: str, inherit_context: str | None) -> str:
    """Define the session for one line of MATRIX, and return its name."""
    name = session_name(version, inherit_context)

    missing = version in OPTIONAL and shutil.which(f"python{version}") is None

    def run(session: nox.Session) -> None:
        if missing:
            session.skip(f"no python{version} on the PATH (pyenv install {version})")
        tests(session, version, inherit_context)

    run.__doc__ = f"The tests on {version}" + (
        " with PYTHON_THREAD_INHERIT_CONTEXT=1" if inherit_context == "1" else ""
    )
    # No interpreter of nox's for one in the chroot: the session makes its own environment there.
    interpreter: str | bool = False if in_sid_chroot(version) or missing else version
    nox.session(name=name, python=interpreter, tags=["tests"])(run)
    return name


nox.options.sessions = [define(version, inherit_context) for version, inherit_context in MATRIX]
