"""The test suite on every supported Python, against the installed wheel.

Run by ``make matrix``, which builds the wheel into ``build/matrix`` and puts
each pyenv interpreter on the PATH. Each session installs that wheel, never the
source tree, so a packaging mistake fails the tests.

``3.13t`` is the free-threaded build (``make python-ft`` makes one); its session
runs the tests with the GIL off (``PYTHON_GIL=0``) and checks that it is.
"""

from __future__ import annotations

from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.13t"]
WHEELS = Path("build/matrix")

# Exits with the path of the anygate imported, unless it is the installed one.
FROM_THE_WHEEL = (
    "import anygate, sys; 'site-packages' in anygate.__file__ or sys.exit(anygate.__file__)"
)

# Exits non-zero unless the interpreter is free-threaded exactly when argv[1] is "t".
BUILD_IS = (
    "import sys, sysconfig; t = bool(sysconfig.get_config_var('Py_GIL_DISABLED'));"
    " t == (sys.argv[1] == 't') or sys.exit(f'free-threaded build: {t}')"
)
# Exits non-zero unless the GIL is off in this process.
GIL_OFF = "import sys; sys._is_gil_enabled() is False or sys.exit('the GIL is enabled')"

nox.options.sessions = ["tests"]
# A fresh environment each run: a reused one would keep a stale wheel of the same version.
nox.options.reuse_existing_virtualenvs = False


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    wheels = sorted(WHEELS.glob("anygate-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {WHEELS}, found {len(wheels)}: run `make matrix`")
    free_threaded = str(session.python).endswith("t")
    # pyenv's 3.13t bin holds a python3.13 too: make sure each session got the build it names.
    session.run("python", "-c", BUILD_IS, "t" if free_threaded else "gil", silent=True)
    env: dict[str, str] = {}
    install_options: list[str] = []
    if free_threaded:
        env["PYTHON_GIL"] = "0"
        # The newest hypothesis has a Rust extension with no free-threaded wheel,
        # which cannot build without crates.io: take its newest wheel instead.
        install_options = ["--only-binary", "hypothesis"]
    # The examples extra: tests/test_web_service.py serves examples/web_service.py.
    session.install(*install_options, f"{wheels[0]}[test,examples]")
    # The source tree must not shadow the wheel.
    session.run("python", "-c", FROM_THE_WHEEL, env=env)
    if free_threaded:
        session.run("python", "-c", GIL_OFF, env=env)
    session.run("python", "-m", "pytest", *session.posargs, env=env)
