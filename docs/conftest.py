"""Runs every Python code block of the docs' pages, with sybil.

Each page is one namespace: its code blocks run in order, as a reader would
type them. Pages define ``async def main()`` and an invisible block calls
``run(main)``, which runs it on asyncio, asyncio with uvloop, and trio in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from sybil import Sybil
from sybil.parsers.rest import DocTestParser, PythonCodeBlockParser, SkipParser

#: The backends each ``run(main)`` uses, in order.
BACKENDS: list[tuple[str, dict[str, Any]]] = [
    ("asyncio", {}),
    ("asyncio", {"use_uvloop": True}),
    ("trio", {}),
]


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


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), DocTestParser(), SkipParser()],
    patterns=["*.rst"],
    setup=setup,
    fixtures=["anygate_log"],
).pytest()
