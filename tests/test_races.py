"""Races forced deterministically: the gate's lock, finalizers, signal
handlers, KeyboardInterrupt, cancellation at each await."""

from __future__ import annotations

import _weakrefset
import asyncio
import contextlib
import gc
import importlib
import inspect
import linecache
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
import weakref
from asyncio import CancelledError
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
import trio
from anyio import CancelScope, create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskGroup, TaskStatus

import anygate
import anygate._guards
import anygate._lock
from anygate import Gate, GateClosed, GateGuard
from helpers import (
    ANYGATE_DIR,
    BACKENDS,
    HANG,
    Closer,
    LockSpy,
    in_thread,
    no_hang,
    private,
    run_queued_wakeups,
)

pytestmark = pytest.mark.anyio


@contextmanager
def default_interrupt_handler() -> Iterator[None]:
    """Let a SIGINT raise KeyboardInterrupt as it does for a user's program."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Before 3.11, asyncio has no Runner to turn the cancellation of the main task
# by an interrupt back into KeyboardInterrupt; anyio's stand-in raises the
# cancellation.
INTERRUPTED = (
    (KeyboardInterrupt,) if sys.version_info >= (3, 11) else (KeyboardInterrupt, CancelledError)
)


def in_anygate(code: CodeType) -> bool:
    return code.co_filename.startswith(ANYGATE_DIR)


def qualname(code: CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)


def at(frame: FrameType) -> str:
    """Where ``frame`` is: its function, file, line and the line's source."""
    code = frame.f_code
    line = frame.f_lineno
    text = linecache.getline(code.co_filename, line).strip()
    return f"{qualname(code)} ({os.path.basename(code.co_filename)}:{line}: {text})"


#: Where the callbacks of weak references live, which run as their referent dies.
WEAKREF_FILES = {weakref.__file__, _weakrefset.__file__}


RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def finalizer(code: CodeType) -> bool:
    """Whether ``code`` may be run by an object dying rather than by a call:
    ``__del__``, a weak reference's callback, a generator or coroutine closed.

    Such code runs wherever a reference count drops, which moves from one run
    to the next, and an interrupt in a finalizer is unraisable, never delivered
    to the release. (No release of the gate runs a generator.)
    """
    return (
        code.co_name == "__del__"
        or code.co_filename in WEAKREF_FILES
        or bool(code.co_flags & RESUMABLE)
    )


class Interrupter:
    """Raises KeyboardInterrupt at its ``index``-th point of a release.

    The points are where CPython delivers a signal's KeyboardInterrupt in
    anygate's code, or may (a superset), in the order they are reached:

    * as each Python function that anygate's code calls starts: its first
      instruction checks for signals;
    * as each call that anygate's code makes returns: CPython checks after
      every C call, and on 3.10 after every call. The interrupt is raised from
      the call itself (a ``return`` trace event, a ``c_return`` profile event),
      so that the ``try`` blocks around the call see it, as they see CPython's;
    * at each jump back of a loop in anygate's code.

    A finalizer is not called by the gate's code (see :func:`finalizer`), and
    the collector is off while armed. The points are counted from the first
    call of a function named ``start`` on, if given. A run with an ``index``
    past the last point lists them all.

    Not ``f_trace_opcodes``: an interrupt raised from an ``opcode`` event lands
    on the instruction after the call, which is outside the ``try`` when the
    call ends it (``try: return lock.acquire()``), where CPython never raises
    it; and ``f_trace_opcodes`` does nothing on CPython 3.12.1.
    """

    def __init__(self, index: int, start: str | None = None) -> None:
        self.index = index
        self._start = start
        self._started = start is None
        #: Each point passed, described; the one at ``index`` raised.
        self.points: list[str] = []
        # The offset of the last line started in each frame of anygate's.
        self._last: dict[FrameType, int] = {}
        self._previous: tuple[Any, Any] | None = None
        self._gc = True

    @property
    def fired(self) -> str | None:
        return self.points[self.index] if 0 <= self.index < len(self.points) else None

    def arm(self) -> None:
        """Trace this thread from here on, until :meth:`disarm`. The collector
        is off meanwhile, so that no finalizer runs where it happens to."""
        self._gc = gc.isenabled()
        gc.disable()
        self._previous = (sys.gettrace(), sys.getprofile())
        sys.settrace(self._call)
        sys.setprofile(self._profile)

    def disarm(self) -> None:
        if self._previous is not None:
            trace, profile = self._previous
            self._previous = None
            sys.setprofile(profile)
            sys.settrace(trace)
            if self._gc:
                gc.enable()

    def _point(self, point: str) -> None:
        self.points.append(point)
        if len(self.points) - 1 == self.index:
            raise KeyboardInterrupt(point)

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        code = frame.f_code
        if not self._started and in_anygate(code) and code.co_name == self._start:
            self._started = True
        caller = frame.f_back
        called_by_the_gate = (
            caller is not None and in_anygate(caller.f_code) and not finalizer(code)
        )
        if called_by_the_gate and self._started:
            assert caller is not None
            self._point(f"as {qualname(code)} starts, called from {at(caller)}")
        # Traced for its lines if it is the gate's, and for its return if the
        # gate called it.
        return self._local if called_by_the_gate or in_anygate(code) else None

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if not self._started:
            return self._local
        if event == "return":
            caller = frame.f_back
            if caller is not None and in_anygate(caller.f_code):
                self._point(f"as {qualname(frame.f_code)} returns to {at(caller)}")
        elif event == "line" and in_anygate(frame.f_code):
            last = self._last.get(frame)
            self._last[frame] = frame.f_lasti
            if last is not None and frame.f_lasti <= last:
                self._point(f"at the jump back to {at(frame)}")
        return self._local

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "c_return" and self._started and in_anygate(frame.f_code):
            name = getattr(arg, "__qualname__", repr(arg))
            self._point(f"as {name} returns to {at(frame)}")


class Release:
    """One release of the last hold on a gate, while a task awaits its close,
    with the interrupter armed for the release alone."""

    def __init__(self, interrupter: Interrupter) -> None:
        self.gate = Gate("g", warn_after=None)
        self.interrupter = interrupter
        #: The guard released, if the way to hold has one.
        self.guard: GateGuard | None = None
        self.close_returned = False
        self.close_error: BaseException | None = None
        self._closer = CancelScope()
        self._tg: TaskGroup

    async def _close(self) -> None:
        with self._closer:
            try:
                await self.gate.close()
            except Exception as exc:  # reported with the point
                self.close_error = exc
            else:
                self.close_returned = True

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[None]:
        """A task group for the task that awaits the close, cancelled after the block."""
        async with create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._closer.cancel()

    async def arm(self, guard: GateGuard | None) -> None:
        """With the hold taken: close the gate, with a task awaiting the close,
        then interrupt from here on. Await it last before the release."""
        self.guard = guard
        self._tg.start_soon(self._close)
        await wait_all_tasks_blocked()
        assert not self.close_returned
        self.interrupter.arm()


async def via_release(release: Release, name: str | None, cancellable: bool) -> None:
    guard = release.gate.enter(name, cancellable=cancellable)
    await release.arm(guard)
    guard.release()


async def via_with_enter(release: Release, name: str | None, cancellable: bool) -> None:
    with release.gate.enter(name, cancellable=cancellable) as guard:
        await release.arm(guard)


async def via_async_with_acquire(release: Release, name: str | None, cancellable: bool) -> None:
    async with release.gate.acquire(name, cancellable=cancellable) as guard:
        await release.arm(guard)


async def via_with_gate(release: Release, name: str | None, cancellable: bool) -> None:
    with release.gate:
        await release.arm(None)


async def via_async_with_gate(release: Release, name: str | None, cancellable: bool) -> None:
    async with release.gate:
        await release.arm(None)


class Inline:
    """A task starter that keeps the task's coroutine, for the caller to await:
    the task's end, and the release it makes, then run in the caller."""

    def __init__(self) -> None:
        self.task: Coroutine[Any, Any, Any] | None = None

    def start_soon(self, func: Callable[..., Any], /, *args: Any, name: Any = None) -> None:
        self.task = func(*args)

    async def start(self, func: Callable[..., Any], /, *args: Any, name: Any = None) -> Any:
        raise NotImplementedError


async def via_start_soon(release: Release, name: str | None, cancellable: bool) -> None:
    """The hold of a task of ``start_soon``, released as the task ends."""
    starter = Inline()

    async def task() -> None:
        await release.arm(None)

    release.gate.start_soon(starter, task, name=name, cancellable=cancellable)
    assert starter.task is not None
    await starter.task


@dataclass(frozen=True)
class Way:
    hold: Callable[[Release, str | None, bool], Awaitable[None]]
    name: str | None = None
    cancellable: bool = False
    #: Where the points start: a cancellable block's exit first exits its
    #: cancel scope, which is anyio's: an interrupt there corrupts the task's
    #: cancel scopes whatever the gate does. The points start at its release.
    start: str | None = None


WAYS = [
    pytest.param(Way(via_release), id="guard.release()"),
    pytest.param(Way(via_release, "n"), id="named-guard.release()"),
    pytest.param(Way(via_release, "n", True), id="cancellable-guard.release()"),
    pytest.param(Way(via_with_enter), id="with-gate.enter()"),
    pytest.param(Way(via_with_enter, "n"), id="with-gate.enter(name)"),
    pytest.param(
        Way(via_with_enter, "n", True, start="release"), id="with-gate.enter(cancellable=True)"
    ),
    pytest.param(Way(via_start_soon), id="start_soon()"),
    pytest.param(Way(via_start_soon, "n"), id="start_soon(name)"),
    pytest.param(
        Way(via_start_soon, "n", True, start="release"), id="start_soon(cancellable=True)"
    ),
    pytest.param(Way(via_with_gate), id="with-gate"),
    pytest.param(Way(via_async_with_gate), id="async-with-gate"),
    pytest.param(Way(via_async_with_acquire), id="async-with-gate.acquire()"),
    pytest.param(Way(via_async_with_acquire, "n"), id="async-with-gate.acquire(name)"),
    pytest.param(
        Way(via_async_with_acquire, "n", True, start="release"),
        id="async-with-gate.acquire(cancellable=True)",
    ),
]


def lock_is_free(gate: Gate) -> bool:
    """Whether another thread can take the gate's lock now (the old core's lock
    is the gate's ``_lock``; the new core's GateLock keeps it as ``_lock``)."""
    lock = private(gate)._lock
    lock = getattr(lock, "_lock", lock)
    free: list[bool] = []

    def probe() -> None:
        taken = lock.acquire(False)
        if taken:
            lock.release()
        free.append(taken)

    in_thread(probe)
    return free[0]


def event_wait_codes() -> set[CodeType]:
    """The code of ``Event.wait`` on each backend: anyio's, and the native one
    that it awaits (asyncio's, which uvloop uses too, and trio's)."""
    codes = {asyncio.Event.wait.__code__, trio.Event.wait.__code__}
    for backend in ("asyncio", "trio"):
        module = importlib.import_module(f"anyio._backends._{backend}")
        codes.add(module.Event.wait.__code__)
    return codes


EVENT_WAIT_CODES = event_wait_codes()


class SignalInEventWait:
    """A tracer that raises ``signum`` in the task that arms it, at its
    ``index``-th line in the backend's ``Event.wait`` (anyio's and the native
    one), until that task first suspends there; the signal's handler runs at
    once, as ``signal.raise_signal`` runs it before it returns.

    A run with an ``index`` past the last line lists the lines.
    """

    def __init__(self, index: int, signum: int) -> None:
        self.index = index
        self.signum = signum
        #: Each line passed, described; the signal was raised at ``index``.
        self.lines: list[str] = []
        self._task: int | None = None
        self._outer: FrameType | None = None
        self._done = False

    @property
    def raised(self) -> bool:
        return 0 <= self.index < len(self.lines)

    def arm(self) -> None:
        """Trace this task's next ``Event.wait``; call it right before the
        gate's call that waits."""
        self._task = anyio.get_current_task().id
        sys.settrace(self._call)

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        if self._done or frame.f_code not in EVENT_WAIT_CODES:
            return None
        if self._outer is None:
            if anyio.get_current_task().id != self._task:
                return None
            self._outer = frame
        return self._local

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if self._done:
            return None
        if event == "line":
            self.lines.append(at(frame))
            if len(self.lines) - 1 == self.index:
                signal.raise_signal(self.signum)
        elif event == "return" and frame is self._outer:
            # Suspended (or returned): what follows is no longer the wait's start.
            self._done = True
        return self._local


@contextmanager
def signal_handled(
    signum: int, handler: Callable[[], None], give_up_at: float = math.inf
) -> Iterator[list[BaseException]]:
    """``handler`` as the Python handler of ``signum`` for the block; yields
    what it raised (a handler's exception would land anywhere).

    From ``give_up_at`` on (``time.monotonic()``), the handler raises
    :class:`Hung` instead: a bound for a test whose event loop may be wedged,
    where no timeout of the loop's own can fire.
    """
    errors: list[BaseException] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if time.monotonic() > give_up_at:
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise Hung(f"still running {time.monotonic() - give_up_at:.1f}s past its bound")
        try:
            handler()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    previous = signal.signal(signum, handle)
    try:
        yield errors
    finally:
        signal.signal(signum, previous)


class Hung(Exception):
    """A test ran past its bound: raised by a signal handler, wherever it lands."""


async def in_wait_closing(gate: Gate, arm: Callable[[], None]) -> None:
    arm()
    await gate.wait_closing()


async def in_acquire(gate: Gate, arm: Callable[[], None]) -> None:
    """Wait in ``acquire()`` on a full gate, until a close refuses it."""
    arm()
    with pytest.raises(GateClosed):
        await gate.acquire("waiter")


async def in_a_background_loop(gate: Gate, arm: Callable[[], None]) -> None:
    """The README's background loop: it holds the gate, and stops when the
    close begins, so that the close can drain."""
    try:
        guard = gate.enter("loop")
    except GateClosed:
        return  # closed before the loop began
    with guard:
        arm()
        await gate.wait_closing()


Waiting = Callable[[Gate, Callable[[], None]], Awaitable[None]]


#: Each way a task waits on a gate, and what then waits for that task: the
#: close() of a gate held by a background loop returns only once the loop ends.
WAITING = [
    pytest.param(in_wait_closing, id="wait_closing()"),
    pytest.param(in_acquire, id="refused-acquire()"),
    pytest.param(in_a_background_loop, id="close()-of-a-background-loop"),
]


#: Seconds between two real signals: a few bytecodes' worth of a wait.
SIGNAL_EVERY = 0.0003


#: Rounds of the stress loop, and the most seconds it may take on each backend.
STRESS_ROUNDS = 300


STRESS_SECONDS = 1.0


@contextmanager
def alarms_every(
    seconds: float, handler: Callable[[], None], give_up_at: float
) -> Iterator[list[BaseException]]:
    """SIGALRM every ``seconds`` for the block, ``handler`` run by each; yields
    what it raised. pytest-timeout's alarm, if set, is put back after; meanwhile
    the alarms themselves bound the block (see :func:`signal_handled`)."""
    with signal_handled(signal.SIGALRM, handler, give_up_at) as errors:
        started = time.monotonic()
        delay, interval = signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
        try:
            yield errors
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if delay:
                left = max(delay - (time.monotonic() - started), 0.001)
                signal.setitimer(signal.ITIMER_REAL, left, interval)


def untraced() -> None:
    """What a waiting task does before it waits, when nothing traces it."""


LEAK_MESSAGE = "garbage-collected without being released"


@contextmanager
def gc_disabled() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class LastHold:
    """The one hold left on a gate, let go of at a chosen moment: released by
    another thread, or by its guard's finalizer when its last reference goes."""

    def __init__(self, gate: Gate, by: str) -> None:
        self.by = by
        self._guards = [gate.enter("last")]

    def let_go(self) -> None:
        if self.by == "thread":
            in_thread(self._guards.pop().release)
        else:
            self._guards.clear()  # GateGuard.__del__ runs here, in this thread

    def leak_warning(self) -> AbstractContextManager[object]:
        if self.by == "finalizer":
            return pytest.warns(ResourceWarning, match=LEAK_MESSAGE)
        return contextlib.nullcontext()


LET_GO = [
    pytest.param("thread", id="released-by-a-thread"),
    pytest.param("finalizer", id="released-by-a-finalizer"),
]


async def cancel_after(checkpoints: int, scope: CancelScope) -> None:
    for _ in range(checkpoints):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "anygate"]


def leak_in_a_cycle(gate: Gate) -> None:
    """Enter ``gate`` with a guard that only the garbage collector can free."""
    cycle: list[object] = [gate.enter("leaked")]
    cycle.append(cycle)


def interrupt_at(codes: set[CodeType], index: int) -> Callable[[FrameType, str, Any], Any]:
    """A tracer that raises KeyboardInterrupt at the ``index``-th line run in ``codes``."""
    seen = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            if seen[0] == index:
                seen[0] += 1
                raise KeyboardInterrupt(frame.f_code.co_filename, frame.f_lineno)
            seen[0] += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code in codes else None

    return calls


def _enter(gate: Gate) -> None:
    gate.enter().release()


def _enter_named(gate: Gate) -> None:
    gate.enter("named").release()


def _with_gate(gate: Gate) -> None:
    with gate:
        pass


_guard_class: Any = GateGuard


ENTRIES = [
    pytest.param(_enter, {private(Gate).enter.__code__}, id="enter()"),
    pytest.param(
        _enter_named,
        {private(Gate).enter.__code__, private(Gate)._count.__code__},
        id="enter(name)",
    ),
    pytest.param(_with_gate, {private(Gate).__enter__.__code__}, id="with gate"),
]


CLONES = [
    pytest.param(None, id="clone()"),
    pytest.param("named", id="clone(name)"),
]


CLONE_CODES = {
    _guard_class.clone.__code__,
    private(anygate._guards).new_guard.__code__,
    private(anygate._guards).NamedGuard._held.__code__,
}


class Interrupted:
    """What a KeyboardInterrupt raised at each line of an entry left behind."""

    def __init__(self) -> None:
        #: (function, line number, holds leaked), one for each line interrupted.
        self.points: list[tuple[str, int, int]] = []
        self.unraisable: list[str] = []

    def run(
        self,
        codes: set[CodeType],
        entry: Callable[[Gate], None],
        base: Callable[[Gate], GateGuard | None] = lambda gate: None,
    ) -> None:
        for index in range(100):
            gate = Gate()
            held = base(gate)
            start = gate.count
            where = self._interrupt(codes, index, entry, gate)
            gc.collect()  # a guard the interrupt dropped is released by its finalizer
            leaked = gate.count - start
            if held is not None:
                held.release()
            if where is None:
                return
            self.points.append((where[0], where[1], leaked))
        pytest.fail("the entry never completed")

    def _interrupt(
        self, codes: set[CodeType], index: int, entry: Callable[[Gate], None], gate: Gate
    ) -> tuple[str, int] | None:
        previous = sys.gettrace()
        sys.settrace(interrupt_at(codes, index))
        try:
            entry(gate)
        except KeyboardInterrupt as interrupt:
            name, line = interrupt.args
            return name, line
        finally:
            sys.settrace(previous)
        return None

    def leaks(self) -> list[str]:
        return [f"{file}:{source((file, line))}" for file, line, leaked in self.points if leaked]

    def counting_point(self) -> int:
        """The index of the line that counts the hold."""
        counting = [
            i
            for i, (file, line, _) in enumerate(self.points)
            if ".append(None)" in source((file, line))
        ]
        assert len(counting) == 1, self.points
        return counting[0]


def source(where: tuple[str, int]) -> str:
    return linecache.getline(*where).strip()


@contextmanager
def unraisable_recorded(monkeypatch: pytest.MonkeyPatch, into: list[str]) -> Iterator[None]:
    def hook(unraisable: Any) -> None:
        into.append(f"{unraisable.exc_type.__name__}: {unraisable.exc_value}")

    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ResourceWarning, message=".*" + LEAK_MESSAGE)
        patch.setattr(sys, "unraisablehook", hook)
        yield


# Enough yields to land a cancellation on each await of the call, whatever order
# the backend runs the tasks in.
CHECKPOINTS = range(6)


@asynccontextmanager
async def corrupting_task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose tasks leave a cancellable block in another task: the
    task that entered it is left inside a cancel scope it can no longer exit, and
    anyio or trio report that when the group ends. That report is theirs, not the
    gate's, and it stays inside this group."""
    try:
        async with create_task_group() as tg:
            yield tg
    except BaseException as exc:  # the backend's report of the corrupted scopes, alone
        if "cancel scope" not in repr(exc).lower():
            raise


@pytest.mark.parametrize("backend", BACKENDS)
class TestKeyboardInterrupt:
    """Run outside the pytest plugin: the interrupt ends the whole event loop."""

    def test_interrupt_inside_held_blocks(self, backend: tuple[str, dict[str, Any]]) -> None:
        gate = Gate()
        kept = gate.enter()

        async def main() -> None:
            with gate, gate.enter(), gate.enter("named"):
                assert gate.count == 4
                signal.raise_signal(signal.SIGINT)
                await anyio.sleep_forever()

        with default_interrupt_handler(), pytest.raises(INTERRUPTED):
            anyio.run(main, backend=backend[0], backend_options=backend[1])
        assert gate.count == 1
        assert gate.holders() == []
        kept.release()
        assert gate.count == 0

    def test_interrupt_inside_held_blocks_in_debug_mode(
        self, backend: tuple[str, dict[str, Any]]
    ) -> None:
        gate = Gate(debug=True)
        kept = gate.enter()

        async def main() -> None:
            async with gate:
                with gate, gate.enter(), gate.enter("named"):
                    assert gate.count == 5
                    assert len(gate.holders()) == 5
                    signal.raise_signal(signal.SIGINT)
                    await anyio.sleep_forever()

        with default_interrupt_handler(), pytest.raises(INTERRUPTED):
            anyio.run(main, backend=backend[0], backend_options=backend[1])
        assert gate.count == 1
        assert [h.name for h in gate.holders()] == ["enter()"]
        kept.release()
        assert gate.count == 0
        assert gate.holders() == []


class TestCancelledClose:
    """A close whose awaiting task is cancelled leaves nothing behind for the
    gate once reopened. The old code kept the warned close's start time on the
    gate: named releases on the reopened gate logged that they kept it from
    closing, and a later close logged a completion time counted from the old one."""

    async def test_no_late_release_logged_after_reopen(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = Gate("g", warn_after=0)
        first = gate.enter("first")
        with caplog.at_level(logging.INFO, logger="anygate"):
            with anyio.move_on_after(0):
                await gate.close()  # warns at once, then is cancelled waiting
            assert any("taking longer than expected" in line for line in log_lines(caplog))
            first.release()  # that close is still going on: this one did keep it
            assert any("'first' kept gate 'g' from closing" in line for line in log_lines(caplog))
            caplog.clear()
            gate.reopen()
            gate.enter("second").release()
            with gate.enter("third"):
                pass
        assert log_lines(caplog) == []

    async def test_no_completion_logged_for_a_later_close_that_did_not_warn(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = Gate("g", warn_after=0)
        first = gate.enter("first")
        closed = anyio.Event()
        with caplog.at_level(logging.INFO, logger="anygate"):
            with anyio.move_on_after(0):
                await gate.close()
            first.release()
            gate.reopen()
            caplog.clear()
            holder = gate.enter("quick")

            async def close() -> None:
                # The warning counts from the end of the grace: this close never warns.
                await gate.close(grace=3600)
                closed.set()

            async with create_task_group() as tg:
                tg.start_soon(close)
                await wait_all_tasks_blocked()
                holder.release()
        assert closed.is_set()
        assert log_lines(caplog) == []

    async def test_completion_logs_this_close_s_own_duration(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = Gate("g", warn_after=0)
        first = gate.enter("first")
        with anyio.move_on_after(0):
            await gate.close()
        first.release()
        gate.reopen()
        holder = gate.enter("second")
        with caplog.at_level(logging.INFO, logger="anygate"):
            async with create_task_group() as tg:
                tg.start_soon(gate.close)
                await wait_all_tasks_blocked()
                holder.release()
        took = gate.statistics().last_close_duration
        assert took is not None
        completed = [line for line in log_lines(caplog) if "completed after" in line]
        assert completed == [f"closing gate 'g' completed after {took:.3f}s"]

    async def test_grace_of_a_cancelled_close_ends_with_reopen(self) -> None:
        gate = Gate("g")
        guards: dict[str, GateGuard] = {}
        go_on = anyio.Event()

        async def hold(name: str) -> None:
            with gate.enter(name, cancellable=True) as guard:
                guards[name] = guard
                await go_on.wait()

        async with create_task_group() as tg:
            tg.start_soon(hold, "before")
            await wait_all_tasks_blocked()
            with anyio.move_on_after(0):
                await gate.close(grace=0)
        assert guards["before"].cancelled_caught
        assert gate.count == 0

        gate.reopen()
        async with create_task_group() as tg:
            tg.start_soon(hold, "after")
            await wait_all_tasks_blocked()
            drained = gate.close()  # a new close, with no grace
            clone = guards["after"].clone("clone", cancellable=True)
            with clone:
                await anyio.lowlevel.checkpoint()
            await wait_all_tasks_blocked()
            go_on.set()
            with no_hang("close() of the reopened gate"):
                await drained
        assert not clone.cancelled_caught
        assert not guards["after"].cancelled_caught

    async def test_grace_runs_out_though_the_closer_was_cancelled(self) -> None:
        gate = Gate("g")
        ended = anyio.Event()
        guards: list[GateGuard] = []

        async def hold() -> None:
            with gate.enter("poll", cancellable=True) as guard:
                guards.append(guard)
                await anyio.sleep_forever()
            ended.set()

        async with create_task_group() as tg:
            tg.start_soon(hold)
            await wait_all_tasks_blocked()
            with anyio.move_on_after(0):
                await gate.close(grace=0.05)
            with no_hang("the cancellable block, once the grace of a cancelled close ran out"):
                await ended.wait()
        assert guards[0].cancelled_caught
        assert gate.count == 0

    async def test_grace_belongs_to_the_close_until_reopen(self) -> None:
        gate = Gate("g")
        holder = gate.enter("holder")
        with anyio.move_on_after(0):
            await gate.close(grace=0)
        # The same close, later: grace=None adds no deadline and removes none.
        drained = gate.close()
        with (
            no_hang("a cancellable block entered after the grace ran out"),
            holder.clone("late", cancellable=True) as late,
        ):
            await anyio.sleep_forever()
        assert late.cancelled_caught
        holder.release()
        await drained
        gate.reopen()
        with gate.enter("fresh", cancellable=True) as fresh:
            await anyio.lowlevel.checkpoint()
        assert not fresh.cancelled_caught


@pytest.mark.parametrize("backend", BACKENDS)
class TestGarbageCollectedGuardInsideTheLock:
    """The collector frees a leaked guard of a bounded gate while the gate's own
    lock is held, in the same thread: the old code deadlocked there. The event
    loop runs in a thread of its own, so that a deadlock fails the test instead
    of hanging it."""

    def test_acquire_on_a_full_gate(self, backend: tuple[str, dict[str, Any]]) -> None:
        gate = Gate("g", limit=1)
        spy = LockSpy(gate)
        caught: list[warnings.WarningMessage] = []
        counts: list[int] = []

        def collect() -> None:
            with warnings.catch_warnings(record=True) as found:
                warnings.simplefilter("always")
                gc.collect()
            caught.extend(w for w in found if LEAK_MESSAGE in str(w.message))

        async def main() -> None:
            # The line of waiters is joined under the lock: the collector runs there.
            spy.at("_wait_in_line", collect)
            guard = await gate.acquire("next")
            counts.append(gate.count)
            guard.release()

        with gc_disabled():
            leak_in_a_cycle(gate)
            assert gate.count == 1
            in_thread(lambda: anyio.run(main, backend=backend[0], backend_options=backend[1]))
        spy.check()
        assert [w.category for w in caught] == [ResourceWarning]
        assert counts == [1]
        assert gate.count == 0


@pytest.mark.parametrize("by", LET_GO)
class TestReleaseWhileTheLockIsHeld:
    """The last hold is let go of (by another thread, or by a finalizer in this
    one) while the gate's lock is held. That release cannot take the lock and
    leaves its follow-up to the lock's holder: each holder must do it, or a close
    waits forever, or a waiter in acquire() never gets the room made for it."""

    async def test_by_a_refused_entry(self, by: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A refused entry gives its hold back, then settles. While the gate is
        still held that settle takes no lock (the last release drains); here
        the last hold goes between the two, so both settles see the count at
        zero, the refused entry's under the lock."""
        gate = Gate("g")
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        closer = Closer(gate)
        settle = anygate._core.GateCore._settle
        let_go: list[bool] = []

        def settle_after_let_go(self: Any, soon: bool = False) -> None:
            if not let_go:
                let_go.append(True)
                last.let_go()
            settle(self, soon)

        with last.leak_warning():
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                monkeypatch.setattr(anygate._core.GateCore, "_settle", settle_after_let_go)
                spy.at("_settle_one", lambda: None, occurrence=1)
                assert gate.try_enter() is None
                monkeypatch.undo()
                await wait_all_tasks_blocked()
                closer.scope.cancel()
        assert let_go
        spy.check()
        assert gate.count == 0
        assert closer.done, "the drain was lost: close() waits forever"

    async def test_a_refused_entry_leaves_the_drain_to_the_last_release(self, by: str) -> None:
        gate = Gate("g")
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        closer = Closer(gate)
        with last.leak_warning():
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                spy.at("_settle_one", lambda: None)
                assert gate.try_enter() is None
                assert not spy.fired, "a refused entry took the lock while the gate was held"
                await wait_all_tasks_blocked()
                assert not closer.done
                last.let_go()
                spy.check()  # the last release drained, under the lock
                await wait_all_tasks_blocked()
                closer.scope.cancel()
        assert gate.count == 0
        assert closer.done, "the drain was lost: close() waits forever"

    async def test_by_the_slow_close_warning(self, by: str) -> None:
        gate = Gate("g", warn_after=0)
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        spy.at("_warn", last.let_go)
        closer = Closer(gate)
        with last.leak_warning():
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                closer.scope.cancel()
        spy.check()
        assert gate.count == 0
        assert closer.done, "the drain was lost: close() waits forever"

    @pytest.mark.parametrize("moment", ["registering", "cancelled"])
    async def test_by_wait_closing(self, by: str, moment: str) -> None:
        gate = Gate("g", limit=1)
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        acquired: list[GateGuard] = []
        watcher = CancelScope()

        async def acquire() -> None:
            acquired.append(await gate.acquire("next"))

        async def watch() -> None:
            with watcher:
                await gate.wait_closing()

        with last.leak_warning():
            async with create_task_group() as tg:
                tg.start_soon(acquire)
                await wait_all_tasks_blocked()
                if moment == "registering":
                    spy.at("wait_closing", last.let_go)
                tg.start_soon(watch)
                await wait_all_tasks_blocked()
                if moment == "cancelled":
                    spy.at("wait_closing", last.let_go)
                    watcher.cancel()
                    await wait_all_tasks_blocked()
                await run_queued_wakeups()
                admitted = bool(acquired)
                tg.cancel_scope.cancel()
        spy.check()
        for guard in acquired:
            guard.release()
        assert admitted, "the room made by the release never reached the task in acquire()"

    @pytest.mark.parametrize("moment", ["registering", "cancelled"])
    async def test_by_close(self, by: str, moment: str) -> None:
        gate = Gate("g")
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        first, second = Closer(gate), Closer(gate)
        with last.leak_warning():
            async with create_task_group() as tg:
                if moment == "registering":
                    spy.at("_watch", last.let_go)
                tg.start_soon(first.run)
                tg.start_soon(second.run)
                await wait_all_tasks_blocked()
                if moment == "cancelled":
                    spy.at("_unwatch", last.let_go)
                    first.scope.cancel()
                    await wait_all_tasks_blocked()
                await run_queued_wakeups()
                first.scope.cancel()
                second.scope.cancel()
        spy.check()
        assert second.done, "the drain was lost: close() waits forever"

    async def test_by_close_nowait(self, by: str) -> None:
        gate = Gate("g")
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        spy.at("_shut_one", last.let_go)
        with last.leak_warning():
            gate.close_nowait()
        spy.check()
        assert gate.statistics().last_close_duration is not None, "the drain was lost"

    async def test_by_acquire(self, by: str) -> None:
        gate = Gate("g", limit=1)
        last = LastHold(gate, by)
        spy = LockSpy(gate)
        spy.at("_wait_in_line", last.let_go)
        with last.leak_warning():
            guard = await gate.acquire("next")
        spy.check()
        assert gate.count == 1
        assert gate.statistics().tasks_waiting == 0
        guard.release()


class TestCloseFromInsideTheLock:
    """``close_nowait()`` called from a signal handler, or from a finalizer, in
    the thread that holds the gate's lock. Python runs a signal handler between
    any two bytecodes of the main thread, so a handler that shuts the gate (the
    natural use of a synchronous, idempotent close) may run inside a release's
    locked region. The gate's lock is not reentrant: waiting for it there waits
    forever. The thread runs apart from the test, so that the hang fails it."""

    def test_inside_a_release(self) -> None:
        gate = Gate("g", limit=2)
        guard = gate.enter("holder")
        gate.close_nowait()
        spy = LockSpy(gate)
        # The last release of a closed gate drains it under the lock.
        spy.at("_settle_one", lambda: gate.close_nowait(grace=0))
        in_thread(guard.release)
        spy.check()
        assert gate.closed
        assert private(gate)._closing.grace == 0
        assert gate.statistics().last_close_duration is not None

    async def test_while_this_thread_owns_the_lock(self, monkeypatch: pytest.MonkeyPatch) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder")
        admission = type(private(gate)._admission)
        join = admission.join

        def join_then_close(self: Any, waiter: Any) -> None:
            join(self, waiter)
            # As a signal handler would, with the lock held by this very thread.
            assert private(gate)._lock._owner == threading.get_ident()
            gate.close_nowait(grace=0)
            assert not gate.closed  # deferred to the end of the locked region

        monkeypatch.setattr(admission, "join", join_then_close)
        with no_hang("acquire() on a gate closed inside its own lock"), pytest.raises(GateClosed):
            await gate.acquire("waiter")
        assert gate.closed
        assert private(gate)._closing.grace == 0
        assert private(gate)._lock._deferred == []
        assert gate.statistics().tasks_waiting == 0
        holder.release()
        await gate.close()

    def test_inside_a_refused_entry(self) -> None:
        gate = Gate("g", limit=1)
        guard = gate.enter("holder")
        gate.close_nowait()
        spy = LockSpy(gate)
        # An entry refused by a closed gate gives its hold back, and settles
        # under the lock.
        spy.at("_settle_one", lambda: gate.close_nowait(grace=0))
        try:
            in_thread(lambda: gate.try_enter())
        finally:
            guard.release()  # never waits, even with the lock held for good
        spy.check()
        assert gate.closed
        assert gate.statistics().last_close_duration is not None


class TestKeyboardInterruptInsideAnEntry:
    """A KeyboardInterrupt raised at each line boundary of an entry, by a tracer:
    a superset of the points where CPython raises it (once a call returns, at a
    loop's jump back). What it can leave behind is a hold counted that no guard
    owns, which no close will ever see released; these tests show where.

    An interrupt once the entry has returned, before the caller has stored the
    guard, runs no line of the gate and cannot be shown this way: the guard is
    dropped, and its finalizer releases the hold with a ResourceWarning."""

    @pytest.mark.parametrize(("entry", "codes"), ENTRIES)
    def test_only_the_step_after_the_count_leaks_a_hold(
        self, entry: Callable[[Gate], None], codes: set[CodeType], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        interrupted = Interrupted()
        with unraisable_recorded(monkeypatch, interrupted.unraisable):
            interrupted.run(codes, entry)
        after_count = interrupted.counting_point() + 1
        leaking = [i for i, (_, _, leaked) in enumerate(interrupted.points) if leaked]
        assert leaking == [after_count], interrupted.leaks()

    @pytest.mark.parametrize(("entry", "codes"), ENTRIES)
    def test_a_guard_interrupted_before_it_is_built_is_collected_quietly(
        self, entry: Callable[[Gate], None], codes: set[CodeType], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        interrupted = Interrupted()
        with unraisable_recorded(monkeypatch, interrupted.unraisable):
            interrupted.run(codes, entry)
        assert interrupted.unraisable == []

    @pytest.mark.parametrize("name", CLONES)
    def test_clone_leaks_a_hold_only_right_after_the_count(
        self, name: str | None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        interrupted = Interrupted()

        bases: dict[Gate, GateGuard] = {}

        def clone(gate: Gate) -> None:
            bases[gate].clone(name).release()

        def base(gate: Gate) -> GateGuard:
            bases[gate] = gate.enter()
            return bases[gate]

        with unraisable_recorded(monkeypatch, interrupted.unraisable):
            interrupted.run(CLONE_CODES, clone, base)
        after_count = interrupted.counting_point() + 1
        leaking = [i for i, (_, _, leaked) in enumerate(interrupted.points) if leaked]
        assert leaking == [after_count], interrupted.leaks()


@pytest.mark.parametrize("checkpoints", CHECKPOINTS)
class TestCancelledAtEachAwait:
    async def test_close_of_an_empty_gate(self, checkpoints: int) -> None:
        gate = Gate()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            tg.start_soon(cancel_after, checkpoints, closer.scope)
        assert gate.closed
        assert private(gate)._closing.waiters == []
        with no_hang("close() after a cancelled close()"):
            await gate.close()

    @pytest.mark.parametrize("grace", [None, 0.0])
    async def test_close(self, checkpoints: int, grace: float | None) -> None:
        gate = Gate("g", warn_after=0)
        holder = gate.enter("holder")
        closer = Closer(gate, grace=grace)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            tg.start_soon(cancel_after, checkpoints, closer.scope)
        assert gate.closed
        assert private(gate)._closing.waiters == []
        assert gate.count == 1
        holder.release()
        assert private(gate)._closing.drained()
        with no_hang("close() after a cancelled close()"):
            await gate.close()

    @pytest.mark.parametrize("closes", [False, True], ids=["open", "closing"])
    async def test_wait_closing(self, checkpoints: int, closes: bool) -> None:
        gate = Gate("g")
        scope = CancelScope()
        returned: list[bool] = []

        async def watch() -> None:
            with scope:
                await gate.wait_closing()
                returned.append(True)

        async def close_soon() -> None:
            await anyio.lowlevel.checkpoint()
            gate.close_nowait()

        async with create_task_group() as tg:
            tg.start_soon(watch)
            tg.start_soon(cancel_after, checkpoints, scope)
            if closes:
                tg.start_soon(close_soon)
        assert private(gate)._closing_waiters == []
        assert returned or scope.cancelled_caught
        if not closes:
            assert not returned
            gate.close_nowait()
        with no_hang("wait_closing() on a closed gate"):
            await gate.wait_closing()

    @pytest.mark.parametrize("state", ["room", "full", "closing"])
    async def test_acquire(self, checkpoints: int, state: str) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder") if state != "room" else None
        scope = CancelScope()

        async def acquire() -> None:
            with scope:
                async with gate.acquire("a"):
                    await anyio.sleep_forever()

        async with create_task_group() as tg:
            tg.start_soon(acquire)
            tg.start_soon(cancel_after, checkpoints, scope)
            if holder is not None:
                await wait_all_tasks_blocked()
                if state == "closing":
                    gate.close_nowait()
                holder.release()
        assert gate.count == 0
        assert gate.statistics().tasks_waiting == 0
        assert gate.holders() == []
        if state == "closing":
            with no_hang("close() after a cancelled acquire()"):
                await gate.close()
        else:
            gate.enter().release()  # the slot is free

    @pytest.mark.parametrize("full", [False, True], ids=["room", "full"])
    async def test_start(self, checkpoints: int, full: bool) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder") if full else None
        scope = CancelScope()
        values: list[str] = []

        async def job(*, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
            await anyio.lowlevel.checkpoint()
            task_status.started("started")
            await anyio.sleep_forever()

        async with create_task_group() as tg:

            async def start() -> None:
                with scope:
                    values.append(await gate.start(tg, job, name="job"))

            tg.start_soon(start)
            tg.start_soon(cancel_after, checkpoints, scope)
            if holder is not None:
                await wait_all_tasks_blocked()
                holder.release()
            await wait_all_tasks_blocked()
            assert gate.count == len(values)
            assert gate.statistics().tasks_waiting == 0
            tg.cancel_scope.cancel()
        assert gate.count == 0
        assert gate.holders() == []
        with no_hang("close() after a cancelled start()"):
            await gate.close()


@pytest.mark.parametrize("backend", BACKENDS)
class TestCancellableBlockLeftInAnotherTask:
    """The gate releases the hold and explains. Each test runs its own event loop,
    which the entering task leaves with its cancel scopes corrupted."""

    def test_exit_by_hand_in_another_task(self, backend: tuple[str, dict[str, Any]]) -> None:
        gate = Gate("g")
        left: list[str] = []
        guards: list[GateGuard] = []

        async def main() -> None:
            guard = gate.enter("request", cancellable=True)
            guards.append(guard)
            entered, done = anyio.Event(), anyio.Event()

            async def enter() -> None:
                guard.__enter__()
                entered.set()
                await done.wait()

            async def leave() -> None:
                await entered.wait()
                try:
                    guard.__exit__(None, None, None)
                except RuntimeError as exc:
                    left.append(str(exc))
                done.set()

            async with corrupting_task_group() as tg:
                tg.start_soon(enter)
                tg.start_soon(leave)

        anyio.run(main, backend=backend[0], backend_options=backend[1])
        assert len(left) == 1
        assert "was left in another task than the one that entered it" in left[0]
        assert guards[0].released
        assert gate.count == 0
        assert gate.holders() == []

    def test_async_generator_closed_in_another_task(
        self, backend: tuple[str, dict[str, Any]]
    ) -> None:
        gate = Gate("g")
        left: list[str] = []

        async def main() -> None:
            async def body() -> AsyncGenerator[str, None]:
                async with gate.enter("stream", cancellable=True):
                    yield "chunk"
                    yield "more"

            stream = body()

            async def consume_one() -> None:
                assert await stream.__anext__() == "chunk"

            async with corrupting_task_group() as tg:
                tg.start_soon(consume_one)
            assert gate.count == 1
            try:
                await stream.aclose()
            except RuntimeError as exc:
                left.append(str(exc))

        anyio.run(main, backend=backend[0], backend_options=backend[1])
        assert len(left) == 1
        assert re.search(r"left in another task .* async generator", left[0])
        assert gate.count == 0
        assert gate.holders() == []


class TestKeyboardInterruptInsideARelease:
    """A KeyboardInterrupt at each point of a release of the last hold of a
    closed gate, in turn (see :class:`Interrupter`), while a task awaits the
    close: the count matches the guard (held, or released), a second
    ``release()`` finishes the job, an awaited ``close()`` returns, and the
    gate's lock is not left taken.

    The old core lost the drain when the interrupt came right after the count
    dropped (the count was 0 and ``close()`` hung), and a named guard was marked
    released before its hold was dropped (the count stayed at 1, and a second
    ``release()`` did nothing).
    """

    @pytest.mark.parametrize("way", WAYS)
    async def test_at_each_point(self, way: Way) -> None:
        passed = await self._run(way, -1)
        assert passed.fired is None
        points = passed.points
        assert points, "the tracer saw no point of the release: the test needs updating"
        failures = []
        for index in range(len(points)):
            failure = await self._run_interrupted(way, index, points[index])
            if failure is not None:
                failures.append(f"{points[index]}: {failure}")
        assert failures == [], "\n".join(failures)

    async def _run(self, way: Way, index: int) -> Interrupter:
        interrupter = Interrupter(index, way.start)
        release = Release(interrupter)
        async with release.task_group():
            try:
                await way.hold(release, way.name, way.cancellable)
            finally:
                interrupter.disarm()
            await run_queued_wakeups()
        assert release.gate.count == 0
        assert release.close_returned
        return interrupter

    async def _run_interrupted(self, way: Way, index: int, point: str) -> str | None:
        """Interrupt at the ``index``-th point; what went wrong, if anything."""
        interrupter = Interrupter(index, way.start)
        release = Release(interrupter)
        gate = release.gate
        async with release.task_group():
            try:
                await way.hold(release, way.name, way.cancellable)
            except KeyboardInterrupt:
                pass
            else:
                return "the interrupt was never raised"
            finally:
                interrupter.disarm()
            try:
                failure = await self._check(release, point)
            finally:
                if release.guard is not None:
                    release.guard.release()  # whatever went wrong, leave nothing held
        if failure is None and not lock_is_free(gate):
            failure = "the gate's lock is left taken"
        return failure

    async def _check(self, release: Release, point: str) -> str | None:
        interrupter, gate = release.interrupter, release.gate
        if interrupter.fired != point:
            return f"the points moved: interrupted {interrupter.fired} instead"
        guard = release.guard
        if guard is None:
            if gate.count:
                return f"count {gate.count} after the exit, with no guard to release"
        else:
            held = 0 if guard.released else 1
            if gate.count != held:
                state = "released" if guard.released else "held"
                return f"count {gate.count} with the guard {state}"
            guard.release()  # a second release finishes the job
            if gate.count:
                return f"count {gate.count} after a second release()"
        await run_queued_wakeups()
        if not release.close_returned:
            return f"close() never returned ({release.close_error!r}): the drain was lost"
        return None


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers run in the main thread only",
)
class TestCloseNowaitFromASignalHandler:
    """``close_nowait()`` from a ``signal.signal`` handler, while the loop's
    thread is inside the backend's ``Event.wait`` of a task waiting on the
    gate: ``wait_closing()`` returns, a waiting ``acquire()`` raises GateClosed,
    and the ``close()`` that waits for a README-style background loop returns.

    The old core set the waiters' events directly from the handler: run inside
    ``Event.wait`` between its flag check and its registration, the wakeup was
    lost and the task waited forever.
    """

    @pytest.mark.parametrize("waiting", WAITING)
    async def test_at_each_line_of_the_backend_s_event_wait(self, waiting: Waiting) -> None:
        await at_each_line_of_event_wait(lambda index: self._run(waiting, index))

    async def _run(self, waiting: Waiting, index: int) -> tuple[list[str], str | None]:
        """Close from the handler at the ``index``-th line of the task's
        ``Event.wait`` (with ``index`` -1, the test closes the gate itself,
        after): the lines traced, and what went wrong, if anything."""
        full = waiting is in_acquire
        gate = Gate("g", limit=1 if full else None, warn_after=None)
        holder = gate.enter("holder") if full else None
        try:
            found = await signal_in_event_wait(
                index, gate.close_nowait, lambda arm: waiting(gate, arm), "the task"
            )
        finally:
            if holder is not None:
                holder.release()
        with no_hang("close() once the waiting task has ended"):
            await gate.close()
        return found


async def at_each_line_of_event_wait(
    run: Callable[[int], Awaitable[tuple[list[str], str | None]]],
) -> None:
    """Run ``run(index)`` for each line of the backend's ``Event.wait``, and fail
    with what went wrong at each line where something did."""
    lines, failure = await run(-1)
    assert failure is None, failure
    assert lines, "no line of Event.wait was traced: the test needs updating"
    failures = []
    for index in range(len(lines)):
        _, failure = await run(index)
        if failure is not None:
            failures.append(f"at {lines[index]}: {failure}")
    assert failures == [], "\n".join(failures)


async def signal_in_event_wait(
    index: int,
    handler: Callable[[], None],
    waiting: Callable[[Callable[[], None]], Awaitable[None]],
    waiter: str,
) -> tuple[list[str], str | None]:
    """Run ``handler`` as a SIGUSR1 handler raised at the ``index``-th line of
    the backend's ``Event.wait`` in a task running ``waiting(arm)`` (with
    ``index`` -1, call it after, from the test): the lines traced, and what
    went wrong, if anything. ``waiter`` names what must be woken."""
    tracer = SignalInEventWait(index, signal.SIGUSR1)
    done: list[bool] = []

    async def wait() -> None:
        await waiting(tracer.arm)
        done.append(True)

    with signal_handled(signal.SIGUSR1, handler) as errors:
        async with create_task_group() as tg:
            previous = sys.gettrace()
            try:
                tg.start_soon(wait)
                await wait_all_tasks_blocked()
            finally:
                sys.settrace(previous)
            if index < 0:
                assert not tracer.raised
                handler()
            elif not tracer.raised:
                return tracer.lines, "the signal was never raised"
            await run_queued_wakeups()
            if not done:
                tg.cancel_scope.cancel()
                return tracer.lines, f"{waiter} was never woken: the wakeup was lost"
    if errors:
        return tracer.lines, f"the handler raised {errors[0]!r}"
    return tracer.lines, None


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers run in the main thread only",
)
class TestLastReleaseFromASignalHandler:
    """The last hold of a closed gate released by a ``signal.signal`` handler
    while the loop's thread is inside the backend's ``Event.wait`` of the task
    awaiting ``close()``: the drain's wakeup is not lost (a direct
    ``Event.set()`` there was, as for ``close_nowait()`` above)."""

    async def test_at_each_line_of_the_backend_s_event_wait(self) -> None:
        await at_each_line_of_event_wait(self._run)

    async def _run(self, index: int) -> tuple[list[str], str | None]:
        gate = Gate("g", warn_after=None)
        guard = gate.enter("last")

        async def close(arm: Callable[[], None]) -> None:
            arm()
            await gate.close()

        return await signal_in_event_wait(index, guard.release, close, "close()")


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers run in the main thread only",
)
class TestRealSignals:
    """The README's pattern under real signals: a SIGALRM every 0.3 ms closes
    the gate of the round, wherever the loop's thread is, while tasks wait on
    it in each way. Every round ends: no wakeup is lost. Bounded, in rounds
    and in time; the forced test above is the proof, this one the field trial.
    The old core hung within seconds on asyncio and uvloop."""

    async def test_close_nowait_from_a_handler_never_hangs(self) -> None:
        current = Gate("before the first round")
        rounds = 0
        deadline = time.monotonic() + STRESS_SECONDS
        # The old core wedged trio's run loop itself: no timeout of the loop's
        # could fire there, so the alarms give up too.
        give_up_at = deadline + HANG
        with alarms_every(SIGNAL_EVERY, lambda: current.close_nowait(), give_up_at) as errors:
            while rounds < STRESS_ROUNDS and time.monotonic() < deadline:
                gate = current = Gate(f"round {rounds}", limit=1, warn_after=None)
                with no_hang(f"round {rounds}: the tasks waiting on a gate closed by a signal"):
                    async with create_task_group() as tg:
                        # The loop takes the only room: acquire() then waits in line.
                        tg.start_soon(in_a_background_loop, gate, untraced)
                        await wait_all_tasks_blocked()
                        tg.start_soon(in_acquire, gate, untraced)
                        tg.start_soon(in_wait_closing, gate, untraced)
                        await gate.wait_closing()
                    await gate.close()
                rounds += 1
        assert errors == []
        assert rounds >= 50, f"only {rounds} rounds in {STRESS_SECONDS}s"


class _InterruptingLock:
    """A stand-in for GateLock's RLock that raises KeyboardInterrupt as its
    ``acquire`` or its ``release`` returns, as CPython may after either call."""

    def __init__(self, at: str) -> None:
        self.real = threading.RLock()
        self._at = at

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self.real.acquire(blocking, timeout)
        if self._at == "acquire":
            raise KeyboardInterrupt("as acquire returned")
        return taken

    def release(self) -> None:
        self.real.release()
        if self._at == "release":
            raise KeyboardInterrupt("as release returned")

    def _is_owned(self) -> bool:
        return bool(self.real._is_owned())  # type: ignore[attr-defined]


class TestGateLockInterrupted:
    """A close, a reopen and the line take the gate's lock with ``with``. An
    interrupt as the lock's acquire returns must give it back (else the gate's
    next close waits for it forever), and one as its release returns must
    still do the work owed meanwhile (else a drain found locked is lost)."""

    def test_as_the_acquire_returns(self) -> None:
        lock = anygate._lock.GateLock(lambda: None)
        stand_in = _InterruptingLock("acquire")
        private(lock)._lock = stand_in
        with pytest.raises(KeyboardInterrupt), lock:
            pytest.fail("the region ran")
        assert not stand_in._is_owned()
        assert not lock.held_here()

    def test_as_the_release_returns(self) -> None:
        settled: list[bool] = []
        lock = anygate._lock.GateLock(lambda: settled.append(True))
        stand_in = _InterruptingLock("release")
        private(lock)._lock = stand_in
        with pytest.raises(KeyboardInterrupt), lock:
            lock.owed = True  # a release found the lock taken
        assert not stand_in._is_owned()
        assert settled == [True], "the settle owed was lost"
