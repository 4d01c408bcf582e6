"""Print, as JSON, what this interpreter is and which test dependencies it has.

Each `make matrix` session runs it with the interpreter and environment of its
tests (see noxfile.py), and records the answer for tools/matrix_summary.py.
"""

from __future__ import annotations

import json
import platform
import sys
import sysconfig
from importlib import metadata

PACKAGES = ("anygate", "anyio", "trio", "uvloop", "hypothesis", "pytest")


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


gil_enabled = getattr(sys, "_is_gil_enabled", None)
print(
    json.dumps(
        {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
            "base_prefix": sys.base_prefix,
            "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
            # Before 3.13 there is no sys._is_gil_enabled(), and the GIL is always on.
            "gil_enabled": gil_enabled() if gil_enabled else True,
            # New in 3.14; None before it.
            "thread_inherit_context": getattr(sys.flags, "thread_inherit_context", None),
            "packages": {name: version(name) for name in PACKAGES},
        }
    )
)
