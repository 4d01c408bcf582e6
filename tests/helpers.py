"""Shared by the test modules."""

from __future__ import annotations

import contextvars
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from anyio import CancelScope

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
