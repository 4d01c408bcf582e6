"""Print which Pythons ``make matrix`` tested, loudly naming any it could not.

python tools/matrix_summary.py build/matrix/report.json
"""

from __future__ import annotations

import json
import sys


def main(report_path: str) -> int:
    with open(report_path) as report:
        sessions = json.load(report)["sessions"]
    print("\nmake matrix, the test suite against the installed wheel:")
    skipped = []
    for session in sessions:
        print(
            f"  Python {session['args']['python'] if 'args' in session else session['name']}: "
            f"{session['result']}"
        )
        if session["result"] != "success":
            skipped.append(session)
    for session in skipped:
        banner = "!" * 72
        print(
            f"\n{banner}\n!! {session['name']}: {session['result'].upper()}, "
            f"{session.get('reason') or 'see the log above'}\n!! NOT TESTED\n{banner}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
