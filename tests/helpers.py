"""Shared by the test modules."""

from __future__ import annotations

import contextvars
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.lowlevel
import pytest
from anyio import CancelScope

import anygate
from anygate import Gate, GateGuard

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

_T = TypeVar("_T")

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


#: Seconds a loop's timer may fire early by time.monotonic(): uvloop reads its
#: clock once an iteration, in whole milliseconds, so a deadline converted to
#: its clock in a long iteration comes early by what that iteration has taken.
CLOCK_SLACK = 0.01

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


@contextmanager
def raises_in_group(kind: type[BaseException]) -> Iterator[None]:
    """Expect ``kind``, raised alone or in exception groups only of it, as a
    task group raises on trio (and on asyncio when a task raised it)."""
    try:
        yield
    except kind:
        return
    except BaseExceptionGroup as group:
        if group.split(kind)[1] is not None:
            raise
        return
    pytest.fail(f"{kind.__name__} was not raised")


def in_fresh_context(func: Callable[[], _T]) -> Callable[[], _T]:
    """``func``, to run in a new thread as a thread that inherits nothing.

    Threads inherit their starter's context on free-threaded 3.14, and with
    ``PYTHON_THREAD_INHERIT_CONTEXT=1``: anyio's context variables then tell a
    thread started from a running loop that a loop runs, and ``anyio.run()``
    there refuses to start. A thread that runs its own loop starts empty.
    """
    return lambda: contextvars.Context().run(func)


def in_thread(func: Callable[[], object]) -> None:
    """Run ``func`` in a new thread, one that anyio never saw, and wait for it;
    re-raise what it raised."""
    Background(func).start().join()


class Background:
    """``func`` run in a new thread, one that anyio never saw, while the caller
    goes on; :meth:`join` waits for it, with a bound, and re-raises what it raised."""

    def __init__(self, func: Callable[[], object]) -> None:
        self._func = func
        self._errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._func()
        except BaseException as exc:  # handed to the caller by join()
            self._errors.append(exc)

    def start(self) -> Background:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(HANG)
        assert not self.thread.is_alive(), f"{self._func!r} has not returned after {HANG}s: stuck"
        if self._errors:
            raise self._errors[0]


class Pause:
    """A point at which a thread parks until the test lets it go: to put what
    another thread does at that very point of this one."""

    def __init__(self) -> None:
        self._reached = threading.Event()
        self._go = threading.Event()

    def here(self) -> None:
        """Park the calling thread here until :meth:`go`."""
        self._reached.set()
        assert self._go.wait(HANG), f"parked for {HANG}s and never let go"

    @property
    def reached(self) -> bool:
        return self._reached.is_set()

    def wait_reached(self) -> None:
        """Wait, with a bound, until a thread is parked here."""
        assert self._reached.wait(HANG), f"no thread reached the pause in {HANG}s"

    def go(self) -> None:
        self._go.set()


async def run_queued_wakeups() -> None:
    """Let wakeups queued through a loop's thread-safe scheduling run, and the
    tasks they wake.

    A finalizer or a signal handler only queues its wakeups, and asyncio counts
    a task whose wakeup is still queued as blocked: one pass of the loop runs
    the queue.
    """
    await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


async def sleep_until_cancelled(reasons: list[str]) -> None:
    """Sleep until cancelled, adding the cancellation's message to ``reasons``."""
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class() as exc:
        reasons.append(str(exc))
        raise


class Block:
    """A task holding a cancellable block until told to stop, or cancelled."""

    def __init__(self, gate: Gate, name: str = "poll") -> None:
        self.gate = gate
        self.name = name
        self.entered = anyio.Event()
        self.stop = anyio.Event()
        self.ended = anyio.Event()
        self.ended_at = 0.0
        self.guard: GateGuard | None = None
        #: The block's cancel scope, while it runs.
        self.scope: CancelScope | None = None
        #: The message of the cancellation that ended the block, if one did.
        self.reason = ""

    async def run(self) -> None:
        with self.gate.enter(self.name, cancellable=True) as guard:
            self.guard = guard
            self.scope = private(guard)._record.scope
            self.entered.set()
            try:
                await self.stop.wait()
            except anyio.get_cancelled_exc_class() as exc:
                self.reason = str(exc)
                raise
        self.ended_at = time.monotonic()
        self.ended.set()

    @property
    def cancelled(self) -> bool:
        return self.guard is not None and self.guard.cancelled_caught


#: The implementation module, for the internals the stubs rightly hide.
GATE_MODULE: Any = importlib.import_module("anygate._gate")


GRACE = 0.05


def hold_back_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold-back left behind then shows as a hang."""
    monkeypatch.setattr("anygate._closing._HOLD_BACK", 3600.0)


def rearms(monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]) -> list[object]:
    """Record each wakeup re-armed by a waiter woken early; ``then()`` as each
    is about to be re-armed, so that what it wakes is the old event."""
    rearmed: list[object] = []
    real = GATE_MODULE.Wakeup.rearm

    def rearm(wakeup: object) -> None:
        rearmed.append(wakeup)
        then()
        real(wakeup)

    monkeypatch.setattr("anygate._wakeup.Wakeup.rearm", rearm)
    return rearmed


def reason_of(gate: str, grace: float = GRACE) -> str:
    return f"gate {gate!r} closed and its grace of {grace:g}s ran out"


def scope_of(guard: GateGuard | None) -> anyio.CancelScope:
    scope: anyio.CancelScope | None = private(guard)._record.scope
    assert scope is not None
    return scope


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition()`` holds."""
    for _ in range(1000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    pytest.fail("never came true")


def waiters(gate: Gate) -> list[object]:
    """The tasks awaiting the drain of the gate's close, or watching its blocks."""
    closing = private(gate)._closing
    return [] if closing is None else [*closing.waiters, *closing.watchers]


def watchers(gate: Gate) -> list[object]:
    """The tasks watching the blocks of the gate's close: one entry each."""
    closing = private(gate)._closing
    return [] if closing is None else list(closing.watchers)


#: Where anygate's code lives: a frame whose code is there is the gate's own.
ANYGATE_DIR = os.path.dirname(anygate.__file__) + os.sep


def fail() -> NoReturn:
    """Raise a ValueError whose __context__ is a KeyError."""
    try:
        fail_first()
    except KeyError:
        raise ValueError("second")  # noqa: B904 - the implicit context is the point


def fail_first() -> NoReturn:
    raise KeyError("first")


#: Functions through which a gate takes its lock for another of its functions.
LOCK_HELPERS = {"try_enter", "__enter__"}


class LockSpy:
    """Stands in for a gate's lock, to act while a given function of the gate holds it.

    What another thread does at that moment, or a finalizer that the garbage
    collector runs there, is otherwise a matter of luck. The action must not take
    the gate's lock itself: it runs while the lock is held.
    """

    def __init__(self, gate: Gate) -> None:
        # The gate's GateLock keeps its threading lock as _lock.
        self._lock: Any = private(gate)._lock._lock
        private(gate)._lock._lock = self
        self._function: str | None = None
        self._skip = 0
        self._action: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self.fired = False

    def at(self, function: str, action: Callable[[], None], occurrence: int = 0) -> None:
        """Run ``action`` when ``function`` next holds the lock (its ``occurrence``-th time)."""
        self._function = function
        self._skip = occurrence
        self._action = action
        self.fired = False

    def check(self) -> None:
        """Fail if the action did not run, or re-raise what it raised."""
        assert self.fired, f"{self._function}() never took the lock: the test needs updating"
        if self._error is not None:
            raise self._error

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got: bool = self._lock.acquire(blocking, timeout)
        if got:
            self._held_by(sys._getframe(1))
        return got

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())

    def __enter__(self) -> None:
        self._lock.acquire()
        self._held_by(sys._getframe(1))

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def _held_by(self, frame: FrameType) -> None:
        # The gate takes its lock through helpers: name the function they serve.
        while frame.f_code.co_name in LOCK_HELPERS and frame.f_back is not None:
            frame = frame.f_back
        if self._action is None or frame.f_code.co_name != self._function:
            return
        if self._skip:
            self._skip -= 1
            return
        action, self._action = self._action, None
        self.fired = True
        try:
            action()
        except BaseException as exc:  # raised from check(): the lock must stay balanced
            self._error = exc


class Warned(logging.Handler):
    """The slow-close warnings of the ``anygate`` logger: when each came, and
    an event set, in the loop that warns, by the first. The ``warned`` fixture
    (conftest.py) installs one for a test."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "is taking longer than expected" in record.getMessage():
            self.times.append(time.monotonic())
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
