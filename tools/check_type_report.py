"""Fail unless ``pyright --verifytypes --outputjson`` found the public API complete.

Complete means every public symbol has a known type and a docstring: pyright
reports missing docstrings but does not fail on them, so this does.

    python tools/check_type_report.py build/verify/types.json
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    with open(path) as report:
        completeness = json.load(report)["typeCompleteness"]
    score = completeness["completenessScore"]
    undocumented = (
        completeness["missingFunctionDocStringCount"] + completeness["missingClassDocStringCount"]
    )
    print(f"type completeness {score:.0%}; public symbols without a docstring: {undocumented}")
    if undocumented:
        for symbol in completeness["symbols"]:
            for diagnostic in symbol.get("diagnostics", []):
                print(f"  {symbol['name']}: {diagnostic['message']}")
    return 0 if score == 1 and undocumented == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
