"""Shared by the test modules."""

from __future__ import annotations

from typing import Any

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
