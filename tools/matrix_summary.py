"""Print which Pythons ``make matrix`` tested, loudly naming any it did not.

python tools/matrix_summary.py build/matrix/report.json
"""

from __future__ import annotations

import json
import sys


def main(report_path: str) -> int:
    with open(report_path) as report:
        sessions = json.load(report)["sessions"]
    print("\nmake matrix: the test suite against the installed wheel")
    untested = []
    for session in sessions:
        name = session["signatures"][0] if session["signatures"] else session["name"]
        build = " (free-threaded, GIL off)" if name.endswith("t") else ""
        print(f"  {name}{build}: {session['result']}")
        if session["result"] != "success":
            untested.append((name, session))
    banner = "!" * 72
    for name, session in untested:
        result = session["result"].upper()
        reason = session.get("reason") or "see its log above"
        if name.endswith("t") and session["result"] == "skipped":
            reason += "; `make python-ft` builds one"
        verdict = "NOT TESTED" if session["result"] == "skipped" else "TESTS DID NOT PASS"
        print(f"\n{banner}\n!! {name} {result}, {verdict}: {reason}\n{banner}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
