from __future__ import annotations

from collections import deque
from collections.abc import Generator
from threading import Lock
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
from typing_extensions import final

from ._wakeup import Wakeup

if TYPE_CHECKING:
    from ._gate import Gate, GateGuard


class _Admission:
    """The limit of a bounded gate, and its queue of tasks waiting for room.

    Only bounded gates have one, so a lock here costs the unbounded path nothing.
    """

    __slots__ = ("_lock", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = Lock()
        self._waiters: deque[_Waiter] = deque()

    def has_room(self, holds: list[None]) -> bool:
        """Whether a hold just counted in ``holds`` may stay.

        Queued waiters come first, so an entry is refused while any wait.
        """
        with self._lock:
            return len(holds) <= self.limit and not self._waiters

    def admit_waiters(self, holds: list[None]) -> None:
        """Count a hold for each waiter there is now room for, oldest first."""
        with self._lock:
            while self._waiters and len(holds) < self.limit:
                waiter = self._waiters.popleft()
                holds.append(None)
                waiter.admitted = True
                waiter.wakeup.wake()

    def fail_waiters(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            waiter.wakeup.wake()

    async def wait(self, gate: Gate, holds: list[None]) -> None:
        """Wait in line until a hold is counted for this task.

        :raises GateClosed: if the gate is closed before there is room
        """
        waiter = _Waiter()
        with self._lock:
            if gate.closed:
                raise gate._closed_error()
            if not self._waiters and len(holds) < self.limit:
                holds.append(None)
                return
            self._waiters.append(waiter)
        try:
            await waiter.wakeup.event.wait()
        except BaseException:
            with self._lock:
                admitted = waiter.admitted
                if not admitted:
                    self._waiters.remove(waiter)
            if admitted:
                gate._leave()
            raise
        if not waiter.admitted:
            raise gate._closed_error()


class _Waiter:
    __slots__ = ("admitted", "wakeup")

    def __init__(self) -> None:
        self.wakeup = Wakeup()
        self.admitted = False


@final
class Acquisition:
    """What :meth:`Gate.acquire` returns: await it, or use it with ``async with``."""

    __slots__ = ("_gate", "_guard", "_name")

    def __init__(self, gate: Gate, name: str | None) -> None:
        self._gate = gate
        self._name = name
        self._guard: GateGuard | None = None

    def __await__(self) -> Generator[object, None, GateGuard]:
        return _acquire(self._gate, self._name).__await__()

    async def __aenter__(self) -> GateGuard:
        self._guard = await _acquire(self._gate, self._name)
        return self._guard

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._guard is not None:
            self._guard.release()


async def _acquire(gate: Gate, name: str | None) -> GateGuard:
    admission = gate._admission
    await anyio.lowlevel.checkpoint_if_cancelled()
    try:
        guard = gate.enter(name)
    except anyio.WouldBlock:
        assert admission is not None
        holds = gate._holds
        await admission.wait(gate, holds)
        return gate._adopt(holds, name)
    await anyio.lowlevel.cancel_shielded_checkpoint()
    return guard
