"""Checks of the arguments users pass, and of the calling thread's event loop."""

from __future__ import annotations

import math
import os
import sys

import anyio
import anyio.lowlevel


def require_loop(what: str) -> anyio.lowlevel.EventLoopToken:
    """The token of the event loop running in this thread.

    :raises anyio.NoEventLoopError: naming ``what``, if no event loop runs here.
        A thread that inherited anyio's context variables from a thread running
        a loop (as threads do on free-threaded 3.14, or with
        ``PYTHON_THREAD_INHERIT_CONTEXT=1``) makes anyio believe a loop runs,
        and the backend then raises a bare :exc:`RuntimeError`: that too means
        no loop runs in this thread.
    """
    try:
        return anyio.lowlevel.current_token()
    except RuntimeError as exc:  # NoEventLoopError is a RuntimeError
        raise anyio.NoEventLoopError(f"{what} needs an event loop in the calling thread") from exc


def check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")


def check_limit(limit: object, none: bool = True) -> None:
    """Check a limit given to ``Gate()`` (``none``: it may be ``None``) or set."""
    if limit is None and none:
        return
    if not isinstance(limit, int) or isinstance(limit, bool):
        kind = "an int or None" if none else "an int (0 pauses the gate)"
        raise TypeError(f"limit must be {kind}, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be 0 or more (0 pauses the gate), not {limit}")


def check_seconds(argument: str, seconds: object) -> float | None:
    if seconds is None:
        return None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(
            f"{argument} must be a number of seconds or None, not {type(seconds).__name__}"
        )
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{argument} must be a number of seconds >= 0, not {seconds}")
    return float(seconds)


def check_callable(func: object, method: str) -> None:
    if not callable(func):
        raise TypeError(f"{method}() needs a callable, not {type(func).__name__}")


def debug_mode(debug: object) -> bool:
    """Whether a gate created with ``debug`` runs in debug mode: ``None`` follows
    the process, which is in debug mode under ``python -X dev`` or with
    ``ANYGATE_DEBUG=1`` in its environment (read as each gate is created)."""
    if debug is None:
        return bool(sys.flags.dev_mode) or os.environ.get("ANYGATE_DEBUG") == "1"
    if debug.__class__ is not bool:
        raise TypeError(f"debug must be True, False or None, not {type(debug).__name__}")
    return debug is True
