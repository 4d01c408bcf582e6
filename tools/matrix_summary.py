"""Print which Pythons ``make matrix`` tested, and on what, loudly naming any it did not.

python tools/matrix_summary.py build/matrix/report.json

Each session records what it ran on in ``sessions/NAME.json`` beside the
report (see noxfile.py): the interpreter's version and where it came from, its
build (free-threaded or not) and flags, and the test dependencies it got.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# Where to get a missing interpreter, by the version in the session's name.
HINTS = {
    "3.13t": "`make python-ft` builds one",
    "3.14": "`make python-sid` gets one",
    "3.15": "`make python-sid` gets one",
    "3.14t": "`pyenv install 3.14t` gets one where python.org is reachable",
}
PACKAGES = ("anyio", "trio", "uvloop", "hypothesis", "pytest")


def describe(ran_on: dict[str, Any]) -> list[str]:
    """What a session ran on, as the lines under its name."""
    build = []
    if ran_on["free_threaded"]:
        gil = "GIL on" if ran_on["gil_enabled"] else "GIL off"
        build.append(f"free-threaded, {gil}")
    else:
        build.append("GIL build")
    inherit = ran_on.get("thread_inherit_context")
    if inherit is not None:
        build.append(f"thread_inherit_context={inherit}")
    packages = ran_on.get("packages", {})
    return [
        f"{ran_on['implementation']} {ran_on['version']} ({', '.join(build)})",
        f"from {ran_on['where']}",
        ", ".join(f"{name} {packages.get(name) or '-'}" for name in PACKAGES),
    ]


def main(report_path: str) -> int:
    report = Path(report_path)
    sessions = json.loads(report.read_text())["sessions"]
    print("\nmake matrix: the test suite against the installed wheel")
    untested = []
    for session in sessions:
        name = session["signatures"][0] if session["signatures"] else session["name"]
        print(f"  {name}: {session['result']}")
        ran_on_path = report.parent / "sessions" / f"{name}.json"
        if ran_on_path.exists():
            for line in describe(json.loads(ran_on_path.read_text())):
                print(f"      {line}")
        if session["result"] != "success":
            untested.append((name, session))
    banner = "!" * 72
    for name, session in untested:
        result = session["result"].upper()
        reason = session.get("reason") or "see its log above"
        # nox skips a session whose interpreter it cannot find, or, where CI is
        # set in the environment, fails it: either way it never ran.
        missing = session["result"] == "skipped" or reason.startswith("Python interpreter")
        match = re.match(r"tests-(3\.\d+t?)", name)
        hint = HINTS.get(match.group(1)) if match else None
        if missing and hint:
            reason += f"; {hint}"
        verdict = "NOT TESTED" if missing else "TESTS DID NOT PASS"
        print(f"\n{banner}\n!! {name} {result}, {verdict}: {reason}\n{banner}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
