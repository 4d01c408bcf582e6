"""Interrupts and signals landing inside the gate: forced at each point in turn.

Issue 17, failures 3 and 4. A KeyboardInterrupt is raised, by a tracer, at each
point of a release where CPython can deliver one; a signal handler that closes
the gate is run, by a tracer, at each line of the backend's ``Event.wait`` of a
task waiting on the gate; then real signals, every 0.3 ms, for a bounded time.
"""

from __future__ import annotations

import _weakrefset
import asyncio
import gc
import importlib
import inspect
import linecache
import math
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

import anyio
import pytest
import trio
from anyio import CancelScope, create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskGroup

import anygate
from anygate import Gate, GateClosed, GateGuard
from helpers import HANG, in_thread, no_hang, private, run_queued_wakeups

pytestmark = pytest.mark.anyio

#: Where anygate's code lives: a frame whose code is there is the gate's own.
ANYGATE_DIR = os.path.dirname(anygate.__file__) + os.sep


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


# -- 3. KeyboardInterrupt inside a release -------------------------------------

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


# Each way to hold, released with the interrupter armed for the release alone.
# ``with`` blocks are real ``with`` statements: the release is their exit.


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


# -- 4. close_nowait() from a signal handler -----------------------------------


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
        lines, failure = await self._run(waiting, -1)
        assert failure is None, failure
        assert lines, "no line of Event.wait was traced: the test needs updating"
        failures = []
        for index in range(len(lines)):
            _, failure = await self._run(waiting, index)
            if failure is not None:
                failures.append(f"at {lines[index]}: {failure}")
        assert failures == [], "\n".join(failures)

    async def _run(self, waiting: Waiting, index: int) -> tuple[list[str], str | None]:
        """Close from the handler at the ``index``-th line of the task's
        ``Event.wait`` (with ``index`` -1, the test closes the gate itself,
        after): the lines traced, and what went wrong, if anything."""
        full = waiting is in_acquire
        gate = Gate("g", limit=1 if full else None, warn_after=None)
        holder = gate.enter("holder") if full else None
        tracer = SignalInEventWait(index, signal.SIGUSR1)
        done: list[bool] = []

        async def wait() -> None:
            await waiting(gate, tracer.arm)
            done.append(True)

        try:
            with signal_handled(signal.SIGUSR1, gate.close_nowait) as errors:
                async with create_task_group() as tg:
                    previous = sys.gettrace()
                    try:
                        tg.start_soon(wait)
                        await wait_all_tasks_blocked()
                    finally:
                        sys.settrace(previous)
                    if index < 0:
                        assert not tracer.raised
                        gate.close_nowait()
                    elif not tracer.raised:
                        return tracer.lines, "the signal was never raised"
                    await run_queued_wakeups()
                    if not done:
                        tg.cancel_scope.cancel()
                        return tracer.lines, "the task was never woken: the wakeup was lost"
            if errors:
                return tracer.lines, f"the handler raised {errors[0]!r}"
        finally:
            if holder is not None:
                holder.release()
        with no_hang("close() once the waiting task has ended"):
            await gate.close()
        return tracer.lines, None


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


def untraced() -> None:
    """What a waiting task does before it waits, when nothing traces it."""
