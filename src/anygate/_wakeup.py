from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from threading import Thread, get_ident

import anyio
import anyio.from_thread
import anyio.lowlevel


class Wakeup:
    """A task waiting in its event loop, and the way to wake it from any thread."""

    __slots__ = ("_loop", "_woken", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self._loop = LoopRef()
        self._woken = False

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            self._loop.call(self.event.set)


class LoopRef:
    """The event loop running in this thread, callable from any other thread."""

    __slots__ = ("_thread", "_token")

    def __init__(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._thread = get_ident()

    def call(self, func: Callable[[], object]) -> None:
        """Run ``func`` in the loop: now if called from its thread, else soon."""
        if get_ident() == self._thread:
            func()
            return
        # anyio primitives are unsafe from a foreign thread, and anyio.from_thread
        # blocks until the event loop runs the call: a caller that the event loop
        # itself is waiting for (in Thread.join, say) would deadlock. So a helper
        # thread does the waiting.
        # A RuntimeError means interpreter shutdown: no event loop is left to call.
        with suppress(RuntimeError):
            Thread(target=self._call_from_helper, args=(func,), daemon=True).start()

    def _call_from_helper(self, func: Callable[[], object]) -> None:
        # A RunFinishedError means the event loop has ended: nothing is left to call.
        with suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(func, token=self._token)
