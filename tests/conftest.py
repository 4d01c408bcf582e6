from __future__ import annotations

import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import BACKENDS, Warned


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
def warned() -> Iterator[Warned]:
    """The slow-close warnings logged during the test."""
    handler = Warned()
    logger = logging.getLogger("anygate")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def gil_enabled() -> bool:
    # sys._is_gil_enabled() is new in 3.13; before it the GIL was always on.
    return bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def pytest_configure(config: pytest.Config) -> None:
    # PYTHON_GIL=0 asks for a run without the GIL (make matrix's 3.13t session);
    # `-X gil=1` would quietly override it, and the run would prove nothing.
    if os.environ.get("PYTHON_GIL") == "0" and gil_enabled():
        raise pytest.UsageError("PYTHON_GIL=0 is set, but the GIL is enabled")
    # Development mode makes every Gate() a debug gate, for the whole process:
    # the tests choose debug mode gate by gate, and expect it off otherwise.
    if sys.flags.dev_mode:
        raise pytest.UsageError(
            "the tests do not run under python -X dev (or PYTHONDEVMODE=1), which "
            "puts every Gate() in debug mode; tests/test_debug.py checks -X dev in "
            "a process of its own"
        )


@pytest.fixture(autouse=True)
def _no_debug_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ANYGATE_DEBUG=1 in the caller's environment would make every Gate() a
    debug gate, here and in the servers the tests start: the tests that want
    it set it themselves."""
    monkeypatch.delenv("ANYGATE_DEBUG", raising=False)


def pytest_report_header(config: pytest.Config) -> str | None:
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return f"free-threaded build, GIL enabled: {gil_enabled()}"
    return None
