"""Calling into an event loop from any thread, without blocking and without threads."""

from __future__ import annotations

import functools
import importlib
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from threading import get_ident, main_thread
from types import CodeType, FrameType

import anyio
import anyio.lowlevel
from typing_extensions import TypeVarTuple, Unpack, final

from ._util import require_loop

_Ts = TypeVarTuple("_Ts")


@final
class LoopRef:
    """The event loop running in the thread that made this, callable from any thread.

    :raises anyio.NoEventLoopError: if no event loop runs in this thread
    """

    __slots__ = ("_backend", "_native", "thread")

    def __init__(self, what: str = "this") -> None:
        token = require_loop(what)
        self._backend = token.backend_class
        self._native = token.native_token
        #: The thread running the loop.
        self.thread = get_ident()

    @property
    def key(self) -> tuple[int, int]:
        """Tells this loop from others: its thread, and its backend's own token."""
        return (self.thread, id(self._native))

    def in_this_thread(self) -> bool:
        return get_ident() == self.thread

    def call_soon(self, func: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]) -> None:
        """Schedule ``func(*args)`` in the loop, from any thread, without blocking.

        The backend's own thread-safe scheduling (what anyio's ``from_thread``
        uses) queues the call: no thread is started and nothing waits. It is
        safe in a finalizer and in a signal handler, which may run inside the
        loop's own scheduling, where calling into the loop directly is not. A
        loop that has ended has nobody left to call, so the call is dropped.
        """
        with suppress(anyio.RunFinishedError):
            self._backend.run_sync_soon(func, args, self._native)


@final
class Wakeup:
    """A task waiting in its event loop, and the way to wake it from any thread.

    Make it in the task that will wait, so that its event belongs to that loop.
    Waking is idempotent: a woken task looks at what it waits for, so a second
    wake (a release finishing an interrupted one) does no harm.
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
        """Set the event: directly in the loop's own thread, else through the loop.

        ``soon`` goes through the loop even in its own thread. It is for callers
        that may run inside the loop's scheduling: a finalizer, or a signal
        handler that interrupted the backend's ``Event.wait`` between its flag
        check and its registration, where a direct set would be lost.
        """
        if soon or get_ident() != self.loop.thread:
            self.loop.call_soon(self.event.set)
        else:
            self.event.set()


#: The signal numbers, as plain ints.
_SIGNALS = sorted(map(int, signal.valid_signals()))
# signal.getsignal() wraps the C function's answer in enums, which costs more
# than the rest of a close; the C function gives SIG_DFL and SIG_IGN as ints.
_C_SIGNAL = "_signal" in sys.builtin_module_names
_getsignal: Callable[[int], object] = (
    importlib.import_module("_signal") if _C_SIGNAL else signal
).getsignal


def in_signal_handler() -> bool:
    """Whether this call runs inside a handler installed with :func:`signal.signal`.

    Such a handler runs in the main thread between any two bytecodes, perhaps
    inside the event loop's own scheduling (an ``Event.wait`` between its flag
    check and its registration), where waking a task directly is lost. It is
    found on the stack by its code: costly, so only for rare calls (a close).
    """
    if get_ident() != main_thread().ident:
        return False
    handlers = [h for h in map(_getsignal, _SIGNALS) if h is not None and h.__class__ is not int]
    codes = {code for code in map(_code_of, handlers) if code}
    if not codes:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _code_of(handler: object) -> CodeType | None:
    """The code a signal handler runs first, if it is Python code."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    handler = getattr(handler, "__func__", handler)
    code: object = getattr(handler, "__code__", None)
    if code is None:
        # An object with __call__.
        call = vars(type(handler)).get("__call__")
        code = getattr(call, "__code__", None)
    return code if isinstance(code, CodeType) else None
