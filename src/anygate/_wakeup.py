"""Calling into an event loop from any thread, without blocking and without threads."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from threading import get_ident

import anyio
import anyio.lowlevel
from typing_extensions import TypeVarTuple, Unpack

_Ts = TypeVarTuple("_Ts")


class LoopRef:
    """The event loop running in the thread that made this, callable from any thread.

    :raises anyio.NoEventLoopError: if no event loop runs in this thread
    """

    __slots__ = ("_backend", "_native", "thread")

    def __init__(self) -> None:
        token = anyio.lowlevel.current_token()
        self._backend = token.backend_class
        self._native = token.native_token
        #: The thread running the loop.
        self.thread = get_ident()

    def in_this_thread(self) -> bool:
        return get_ident() == self.thread

    def call(self, func: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]) -> None:
        """Run ``func(*args)`` in the loop: now if called from its thread, else soon."""
        if get_ident() == self.thread:
            func(*args)
        else:
            self.call_soon(func, *args)

    def call_soon(self, func: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]) -> None:
        """Schedule ``func(*args)`` in the loop, from any thread, without blocking.

        The backend's own thread-safe scheduling (what anyio's ``from_thread``
        uses) queues the call: no thread is started and nothing waits. It is safe
        in a finalizer too, where calling into the loop directly is not. A loop
        that has ended has nobody left to call, so the call is dropped.
        """
        with suppress(anyio.RunFinishedError):
            self._backend.run_sync_soon(func, args, self._native)


class Wakeup:
    """A task waiting in its event loop, and the way to wake it from any thread.

    Make it in the task that will wait, so that its event belongs to that loop.
    """

    __slots__ = ("event", "loop")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.loop = LoopRef()

    def rearm(self) -> None:
        """Wait again, after a wakeup, without leaving the lists it is in.

        A wakeup whose call was queued before this may set the old event: the
        waiter, woken already, must look at what it waits for after this.
        """
        self.event = anyio.Event()

    def wake(self, soon: bool = False) -> None:
        """Set the event; ``soon`` defers even a same-thread call to the loop."""
        if soon:
            self.loop.call_soon(self.event.set)
        else:
            self.loop.call(self.event.set)
