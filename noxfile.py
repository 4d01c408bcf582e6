"""The test suite on every supported Python, against the installed wheel.

Run by ``make matrix``, which builds the wheel into ``build/matrix`` and puts
each pyenv interpreter on the PATH. Each session installs that wheel, never the
source tree, so a packaging mistake fails the tests.
"""

from __future__ import annotations

from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
WHEELS = Path("build/matrix")

# Exits with the path of the anygate imported, unless it is the installed one.
FROM_THE_WHEEL = (
    "import anygate, sys; 'site-packages' in anygate.__file__ or sys.exit(anygate.__file__)"
)

nox.options.sessions = ["tests"]
# A fresh environment each run: a reused one would keep a stale wheel of the same version.
nox.options.reuse_existing_virtualenvs = False


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    wheels = sorted(WHEELS.glob("anygate-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {WHEELS}, found {len(wheels)}: run `make matrix`")
    # The examples extra: tests/test_web_service.py serves examples/web_service.py.
    session.install(f"{wheels[0]}[test,examples]")
    # The source tree must not shadow the wheel.
    session.run("python", "-c", FROM_THE_WHEEL)
    session.run("python", "-m", "pytest", *session.posargs)
