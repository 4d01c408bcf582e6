from __future__ import annotations

import warnings
from threading import Thread, get_ident
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
from typing_extensions import final

from ._exceptions import GateClosed

# Bypassing GateGuard.__new__ and __init__ makes this the cheapest way to build one.
_new_guard = cast("Callable[[type[GateGuard]], GateGuard]", object.__new__)


@final
class Gate:
    """A gate that work enters, and that shutdown closes and drains.

    Each unit of work that uses a shared object (a tenant, a pool, files on disk)
    holds the gate while it uses the object: ``with gate:`` for a block, or a
    :class:`GateGuard` from :meth:`enter` when the hold outlives a block.
    Shutdown calls :meth:`close`, which refuses every new entry at once and returns
    when the last holder has let go. After that, nothing is using the object.

    The gate only counts; it never waits to admit. :meth:`enter` and ``with gate:``
    do not yield to the event loop: they succeed at once or raise
    :exc:`GateClosed`.

    A gate needs no running event loop to be created, and it is not tied to one:
    the same gate can serve successive :func:`anyio.run` calls on any backend.

    Thread safety: entering, releasing and cloning may be done from any thread,
    including threads that anyio did not start; a last release in a thread wakes
    :meth:`close` in its own event loop. No lock is taken on these paths.

    :param name: names the gate in errors, warnings and ``repr()``
    :raises TypeError: if ``name`` is neither a string nor ``None``
    """

    __slots__ = ("_name", "_holds", "_closed", "_closers")

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self._name = name
        # One item per hold: list.append and list.pop are atomic in CPython, which
        # makes len() an exact, lock-free counter for threads.
        self._holds: list[None] = []
        self._closed = False
        self._closers: list[_Closer] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        name = "" if self._name is None else f" {self._name!r}"
        return f"<Gate{name} {state}, count={len(self._holds)}>"

    @property
    def name(self) -> str | None:
        """The gate's name, or ``None``."""
        return self._name

    @property
    def count(self) -> int:
        """How many holds are in progress: guards unreleased plus ``with`` blocks."""
        return len(self._holds)

    @property
    def closed(self) -> bool:
        """``True`` from the moment :meth:`close` is called until :meth:`reopen`."""
        return self._closed

    def enter(self, name: str | None = None) -> GateGuard:
        """Hold the gate until the returned guard is released.

        Never blocks and never yields to the event loop.

        :param name: names the holder in warnings about a leaked guard
        :return: a guard to :meth:`~GateGuard.release`, or to use with ``with``
        :raises GateClosed: if the gate is closed
        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        holds = self._holds
        # Count first, then look at the flag: close() sets the flag before it
        # looks at the count, so one of the two always sees the other.
        holds.append(None)
        if self._closed:
            self._leave()
            raise self._closed_error()
        guard = _new_guard(GateGuard)
        guard._gate = self
        guard._holds = holds
        guard._name = name
        return guard

    def try_enter(self, name: str | None = None) -> GateGuard | None:
        """Like :meth:`enter`, but return ``None`` instead of raising on a closed gate.

        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        try:
            return self.enter(name)
        except GateClosed:
            return None

    def check(self) -> None:
        """Raise if the gate is closed, so that long work can stop on its own.

        :raises GateClosed: if the gate is closed
        """
        if self._closed:
            raise self._closed_error()

    def __enter__(self) -> None:
        holds = self._holds
        holds.append(None)
        if self._closed:
            self._leave()
            raise self._closed_error()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        holds = self._holds
        try:
            holds.pop()
        except IndexError:
            raise RuntimeError(f"{self!r} was exited more often than entered") from None
        if not holds and self._closed:
            self._wake()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc_val, exc_tb)

    def close(self) -> Coroutine[Any, Any, None]:
        """Refuse new entries now; the awaitable returned waits for the drain.

        ``await gate.close()`` is the usual call. The gate is closed by the call
        itself, before anything is awaited: from then on, :meth:`enter` and
        ``with gate:`` raise :exc:`GateClosed`. So ``drained = gate.close()`` shuts
        the door at once, and ``await drained`` later waits. Guards already held
        are untouched, and :meth:`GateGuard.clone` still works on them, since a
        clone is part of work already admitted.

        The wait ends when :attr:`count` reaches zero, woken by the last release
        with no polling; at once (after a checkpoint) if nothing is held. Any
        number of tasks, in any number of event loops, may wait for the same
        gate, and a later call returns once the gate is drained.

        Cancellation: cancelling the waiting task raises the cancellation in it and
        nothing else; the gate stays closed, holders are not disturbed, and a later
        ``close()`` waits again. To bound the wait, wrap it in
        :func:`anyio.fail_after` or :func:`anyio.move_on_after`.
        """
        self._closed = True
        return self._drained()

    async def _drained(self) -> None:
        if self._holds:
            closer = _Closer()
            # Register before looking at the count, so that the last release
            # either sees this closer or happens before the look.
            self._closers.append(closer)
            try:
                if self._holds:
                    await closer.event.wait()
                    return
            finally:
                self._closers.remove(closer)
        await anyio.lowlevel.checkpoint()

    def reopen(self) -> None:
        """Admit entries again after a completed close.

        :raises RuntimeError: if the gate is not closed, or is closed but still held
        """
        if not self._closed:
            raise RuntimeError(f"cannot reopen {self!r}: it is not closed")
        if self._holds:
            raise RuntimeError(f"cannot reopen {self!r}: it is still held")
        self._closed = False

    def _leave(self) -> None:
        holds = self._holds
        holds.pop()
        if not holds and self._closed:
            self._wake()

    def _wake(self) -> None:
        for closer in self._closers.copy():
            closer.wake()

    def _closed_error(self) -> GateClosed:
        if self._name is None:
            return GateClosed("the gate is closed")
        return GateClosed(f"gate {self._name!r} is closed")


@final
class GateGuard:
    """One hold on a :class:`Gate`, from :meth:`Gate.enter` until :meth:`release`.

    The gate cannot finish closing while the guard is held. Use the guard as a
    (sync or async) context manager to release it when a block ends; exceptions
    from the block propagate unchanged.

    A guard that is garbage-collected while still held is released then, and a
    :exc:`ResourceWarning` names the gate and the holder: a leaked guard delays
    :meth:`Gate.close` only until the guard is collected.

    Thread safety: a guard may be released or cloned from any thread.
    """

    __slots__ = ("_gate", "_holds", "_name")

    _gate: Gate
    # The gate's hold list while held, None once released.
    _holds: list[None] | None
    _name: str | None

    def __new__(cls) -> GateGuard:
        raise TypeError("guards are made by Gate.enter() and GateGuard.clone()")

    def __repr__(self) -> str:
        state = "released" if self._holds is None else "held"
        name = "" if self._name is None else f" {self._name!r}"
        return f"<GateGuard{name} {state} on {self._gate!r}>"

    @property
    def gate(self) -> Gate:
        """The gate this guard holds."""
        return self._gate

    @property
    def name(self) -> str | None:
        """The holder's name given to :meth:`Gate.enter` or :meth:`clone`, or ``None``."""
        return self._name

    @property
    def released(self) -> bool:
        """``True`` once :meth:`release` has been called."""
        return self._holds is None

    def release(self) -> None:
        """Let go of the gate. Calling it again does nothing.

        If this was the last hold on a closed gate, the tasks waiting in
        :meth:`Gate.close` are woken.
        """
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        holds.pop()
        if not holds and self._gate._closed:
            self._gate._wake()

    def clone(self, name: str | None = None) -> GateGuard:
        """Return a new guard on the same gate, to hand to work this holder started.

        Succeeds even on a closed gate, since the clone's work is part of work
        already admitted; :meth:`Gate.close` waits for the clone too.

        :param name: names the new holder
        :raises RuntimeError: if this guard has been released
        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        holds = self._holds
        if holds is None:
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        holds.append(None)
        # Released by another thread meanwhile: the count may have reached zero
        # and a close may have returned, so the clone must not be admitted.
        if self._holds is None:
            self._gate._leave()
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        guard = _new_guard(GateGuard)
        guard._gate = self._gate
        guard._holds = holds
        guard._name = name
        return guard

    def __enter__(self) -> GateGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        holds.pop()
        if not holds and self._gate._closed:
            self._gate._wake()

    async def __aenter__(self) -> GateGuard:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        if self._holds is not None:
            message = f"{self!r} was garbage-collected without being released"
            self.release()
            warnings.warn(
                message,
                ResourceWarning,
                stacklevel=1,
                source=self,
            )


@final
class _Closer:
    """A task waiting in :meth:`Gate.close`, and the way to wake it from any thread."""

    __slots__ = ("event", "_token", "_thread", "_woken")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self._token = anyio.lowlevel.current_token()
        self._thread = get_ident()
        self._woken = False

    def wake(self) -> None:
        if self._woken:
            return
        self._woken = True
        if get_ident() == self._thread:
            self.event.set()
            return
        # Event.set() is unsafe from a foreign thread, and anyio.from_thread blocks
        # until the event loop runs the call: a releasing thread that the event
        # loop itself is waiting for (in Thread.join, say) would deadlock. So a
        # helper thread does the waiting.
        try:
            Thread(target=self._set_from_helper, name="anygate wake", daemon=True).start()
        except RuntimeError:
            pass  # interpreter shutdown: no event loop is left to wake

    def _set_from_helper(self) -> None:
        try:
            anyio.from_thread.run_sync(self.event.set, token=self._token)
        except anyio.RunFinishedError:
            pass  # the closer's event loop has ended; nobody is left to wake
