"""Shared by the test modules."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from anyio import CancelScope

from anygate import Gate

#: Every backend the tests run on: the ``anyio_backend`` fixture's parameters,
#: and the parameters of tests that start their own event loops.
BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


class Closer:
    """Runs ``gate.close()`` in a task and records when it has returned."""

    def __init__(self, gate: Gate, grace: float | None = None) -> None:
        self.gate = gate
        self.grace = grace
        self.done = False
        self.cancelled = False
        self.scope = CancelScope()

    async def run(self) -> None:
        with self.scope:
            await self.gate.close(grace=self.grace)
            assert self.gate.count == 0
            self.done = True
        self.cancelled = self.scope.cancelled_caught


def private(obj: object) -> Any:
    """``obj`` untyped, to look at internals that the stubs rightly hide."""
    return obj


#: Seconds before a wait that must end is called hung. Far above any wakeup's
#: latency: it only matters when a wakeup is lost, and then the test fails.
HANG = 5.0


@contextmanager
def no_hang(what: str) -> Iterator[None]:
    """Fail, saying what hung, if the block has not finished after :data:`HANG` seconds."""
    try:
        with anyio.fail_after(HANG):
            yield
    except TimeoutError:
        pytest.fail(f"hung: {what}")


def in_thread(func: Callable[[], object]) -> None:
    """Run ``func`` in a new thread, one that anyio never saw, and wait for it;
    re-raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"{func!r} has not returned after {HANG}s: stuck"
    if errors:
        raise errors[0]
