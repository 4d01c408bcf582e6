"""Runs every Python code block of the docs' pages, with sybil.

Each page is one namespace: its code blocks run in order, as a reader would
type them. Pages define ``async def main()`` and an invisible block calls
``run(main)``, which runs it on asyncio, asyncio with uvloop, and trio in turn.

``NEW_API`` is ``False`` while anygate lacks the API of the core rewrite
(``close_nowait``, ``wait_closing``, ``start``, ``parent=``, ``statistics``,
``gated``, ``acquire(cancellable=)``). Blocks that use it are preceded by
``.. skip: next if(not NEW_API, reason=...)``, so they are reported as skipped
with that reason until then, and run, and must pass, as soon as it exists.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from sybil import Sybil
from sybil.parsers.rest import DocTestParser, PythonCodeBlockParser, SkipParser

from anygate import Gate

#: The backends each ``run(main)`` uses, in order.
BACKENDS: list[tuple[str, dict[str, Any]]] = [
    ("asyncio", {}),
    ("asyncio", {"use_uvloop": True}),
    ("trio", {}),
]

# One name stands for the whole rewrite: once it exists, every pending block
# runs, and one that uses a name still missing fails loudly rather than skips.
NEW_API = hasattr(Gate, "close_nowait")


def run(main: Callable[[], Awaitable[object]]) -> None:
    """Run ``main()`` to completion on each backend in turn."""
    for backend, options in BACKENDS:
        anyio.run(main, backend=backend, backend_options=options)


@pytest.fixture
def anygate_log() -> Iterator[list[str]]:
    """The messages logged on the ``anygate`` logger while a page runs."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname} {record.getMessage()}")

    logger = logging.getLogger("anygate")
    handler = Collect()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def setup(namespace: dict[str, Any]) -> None:
    namespace["run"] = run
    namespace["NEW_API"] = NEW_API


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), DocTestParser(), SkipParser()],
    patterns=["*.rst"],
    setup=setup,
    fixtures=["anygate_log"],
).pytest()
