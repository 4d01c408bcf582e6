"""anygate against a bare no-op ``with``, against its peers, and against itself.

Every verdict comes from a ratio timed in one process, with the case and its
floor or peer interleaved: each repeat times the case, then the baseline (or
the baseline, then the case: the order alternates), and gives one ratio. The
tables report the median ratio over the repeats and its interquartile range.
Whatever slows the machine for a while slows both halves of a repeat alike and
cancels in the ratio; a repeat that was interrupted moves the median little.

- Short paths are calibrated so that each side of a repeat takes about 0.5 ms
  (the two sides do not run the same number of loops: as long, so that an
  interruption is as likely to land on either), and repeated hundreds of times.
- Work in the event loop's thread is timed on that thread's CPU time, which
  leaves out the time the thread waits while other processes run; work that
  spans threads on the process's CPU time; latency on the wall clock.
- The cyclic garbage collector is off while timing (and collects between
  repeats of long runs); one informative row shows the tasks with it on.

Sections, each row on asyncio, asyncio with uvloop and trio:

- holds: ``with gate:``, ``gate.enter()`` and a named ``enter()`` against a
  no-op ``with`` on a ``__slots__`` object;
- acquire: ``async with gate.acquire()`` on an uncontended bounded gate against
  anyio's ``CapacityLimiter`` and ``Semaphore`` and the backend's own semaphore;
- tasks: ``gate.start_soon`` against ``task_group.start_soon``, for 10,000 and
  100,000 tasks, and from the same runs the gate's cost per task at both sizes;
- threads: the latency of a ``close()`` woken by a release in a foreign thread
  against one in the event loop, and 2,000 ``to_thread`` jobs that release
  their guard in the worker thread against the same jobs releasing in the loop;
- asgi: a request through ``anygate.asgi.GateMiddleware`` on an unbounded gate,
  at the ASGI level, against a no-op middleware that wraps ``send`` the same way;
- bytes per held guard, from tracemalloc.

``benchmarks/holds.svg`` gets the ratios as a chart. ``--quick`` runs a fifth
of the repeats, to try the script out: its verdicts are not to be trusted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import anyio.to_thread

from anygate import Gate, GateGuard
from anygate.asgi import ASGIApp, GateMiddleware, Message, Receive, Scope, Send

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}
ASYNCIO_ONLY = ("asyncio", "uvloop")
TRIO_ONLY = ("trio",)

#: Seconds each side of a repeat takes, in the rows calibrated to it: short
#: enough that most repeats run uninterrupted on a busy machine.
BLOCK = 0.0005
#: Repeats before the recorded ones, to warm the caches and the specializing
#: interpreter: three for calibrated rows, one for the rows of long runs.
WARMUP = 3
#: Room on the bounded gates and semaphores of the acquire rows: never reached there.
ROOM = 1000
#: The limit of the gate in the thread-jobs row: well below anyio's 40 worker
#: threads and about the cores, so that the gate is what the jobs wait for and
#: most releases admit the next job. (With 16, on 2 cores, the CPUs are the
#: bottleneck and the wakeups hide behind them.)
JOB_LIMIT = 4

#: Reads a clock in seconds.
Clock = Callable[[], float]
#: Times ``loops`` iterations of something on the clock given, and returns the seconds.
Timer = Callable[[int, Clock], Awaitable[float]]


@contextmanager
def gc_paused(paused: bool) -> Iterator[None]:
    """Keep the cyclic collector out of a timed stretch, if ``paused``."""
    enabled = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Holds: sync paths against a no-op ``with``.


class NoOp:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass


async def noop_with(loops: int, clock: Clock) -> float:
    noop = NoOp()
    started = clock()
    for _ in range(loops):
        with noop:
            pass
    return clock() - started


async def with_gate(loops: int, clock: Clock) -> float:
    gate = Gate(debug=False)
    started = clock()
    for _ in range(loops):
        with gate:
            pass
    return clock() - started


async def with_enter(loops: int, clock: Clock) -> float:
    gate = Gate(debug=False)
    started = clock()
    for _ in range(loops):
        with gate.enter():
            pass
    return clock() - started


async def with_named_enter(loops: int, clock: Clock) -> float:
    gate = Gate(debug=False)
    started = clock()
    for _ in range(loops):
        with gate.enter("GET /x"):
            pass
    return clock() - started


async def debug_with_gate(loops: int, clock: Clock) -> float:
    gate = Gate(debug=True)
    started = clock()
    for _ in range(loops):
        with gate:
            pass
    return clock() - started


async def debug_with_enter(loops: int, clock: Clock) -> float:
    gate = Gate(debug=True)
    started = clock()
    for _ in range(loops):
        with gate.enter():
            pass
    return clock() - started


# Acquire: one uncontended task, each iteration a checkpoint on both sides.


async def gate_acquire(loops: int, clock: Clock) -> float:
    gate = Gate(limit=ROOM)
    started = clock()
    for _ in range(loops):
        async with gate.acquire():
            pass
    return clock() - started


def fast_gate(limit: int) -> Gate | None:
    """A gate with ``fast_acquire=True``, or None where anygate predates the option."""
    # Through a dict, so that the bench type-checks against either version.
    options: dict[str, Any] = {"fast_acquire": True}
    try:
        return Gate(limit=limit, **options)
    except TypeError:
        return None


async def gate_fast_acquire(loops: int, clock: Clock) -> float:
    gate = fast_gate(ROOM)
    assert gate is not None
    started = clock()
    for _ in range(loops):
        async with gate.acquire():
            pass
    return clock() - started


async def capacity_limiter(loops: int, clock: Clock) -> float:
    limiter = anyio.CapacityLimiter(ROOM)
    started = clock()
    for _ in range(loops):
        async with limiter:
            pass
    return clock() - started


async def anyio_fast_semaphore(loops: int, clock: Clock) -> float:
    semaphore = anyio.Semaphore(ROOM, fast_acquire=True)
    started = clock()
    for _ in range(loops):
        async with semaphore:
            pass
    return clock() - started


async def asyncio_semaphore(loops: int, clock: Clock) -> float:
    semaphore = asyncio.Semaphore(ROOM)
    started = clock()
    for _ in range(loops):
        async with semaphore:
            pass
    return clock() - started


async def trio_semaphore(loops: int, clock: Clock) -> float:
    import trio  # only the trio backend has it

    semaphore = trio.Semaphore(ROOM)
    started = clock()
    for _ in range(loops):
        async with semaphore:
            pass
    return clock() - started


# Tasks: many short tasks, gated or not.


async def task_body() -> None:
    await anyio.lowlevel.checkpoint()


def spawn(count: int, gated: bool) -> Timer:
    """Start ``count`` tasks that each cross a checkpoint, and wait for them.

    Gated tasks are started with ``gate.start_soon``, which holds the gate from
    before each task starts until it ends; then ``close()`` waits for them all,
    as a server's shutdown would.
    """

    async def run(loops: int, clock: Clock) -> float:
        elapsed = 0.0
        for _ in range(loops):
            gate = Gate(warn_after=None)
            started = clock()
            async with anyio.create_task_group() as tg:
                if gated:
                    for _ in range(count):
                        gate.start_soon(tg, task_body)
                    await gate.close()
                else:
                    for _ in range(count):
                        tg.start_soon(task_body)
            elapsed += clock() - started
        return elapsed

    return run


# Trees: closes that walk many gates.


def close_wide(children: int) -> Timer:
    """Close a gate with ``children`` child gates, and wait for the drain."""

    async def run(loops: int, clock: Clock) -> float:
        elapsed = 0.0
        for _ in range(loops):
            root = Gate(warn_after=None)
            kids = [Gate(parent=root, warn_after=None) for _ in range(children)]
            started = clock()
            await root.close()
            elapsed += clock() - started
            del kids
        return elapsed

    return run


def drain_chain(depth: int) -> Timer:
    """Close the root of a chain of ``depth`` gates held at its leaf, then
    release the leaf and wait for the drain to climb back to the root."""

    async def run(loops: int, clock: Clock) -> float:
        elapsed = 0.0
        for _ in range(loops):
            gates = [Gate(warn_after=None)]
            for _ in range(depth - 1):
                gates.append(Gate(parent=gates[-1], warn_after=None))
            leaf = gates[-1].enter()
            started = clock()
            drained = gates[0].close()
            leaf.release()
            await drained
            elapsed += clock() - started
        return elapsed

    return run


# Threads: releases that happen outside the event loop.


async def close_and_time(gate: Gate, returned: list[float], clock: Clock) -> None:
    await gate.close()
    returned.append(clock())


async def wait_and_time(event: anyio.Event, returned: list[float], clock: Clock) -> None:
    await event.wait()
    returned.append(clock())


def call_and_time(call: Callable[[], object], released: list[float], clock: Clock) -> None:
    # Let the event loop go idle in its selector first, as it is when a
    # close() waits for work running elsewhere.
    time.sleep(0.0003)
    released.append(clock())
    call()


def settle(threads: int) -> None:
    """Wait (untimed) until no more than ``threads`` threads are left.

    A release in a foreign thread may leave threads of anygate's own behind,
    finishing: a close timed while they still run would share the GIL and the
    CPUs with them.
    """
    deadline = time.monotonic() + 1.0
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.0001)


def close_latency(foreign: bool) -> Timer:
    """Seconds from the last release until the task awaiting ``close()`` runs on,
    summed over ``loops`` closes. The release is in a plain ``threading.Thread``
    that anyio never saw if ``foreign``, else in a task of the event loop. The
    clock must be one that all threads share."""

    async def run(loops: int, clock: Clock) -> float:
        total = 0.0
        for _ in range(loops):
            threads = threading.active_count()
            gate = Gate(warn_after=None)
            guard = gate.enter()
            released: list[float] = []
            returned: list[float] = []
            thread = threading.Thread(target=call_and_time, args=(guard.release, released, clock))
            async with anyio.create_task_group() as tg:
                tg.start_soon(close_and_time, gate, returned, clock)
                await anyio.wait_all_tasks_blocked()
                if foreign:
                    thread.start()
                else:
                    released.append(clock())
                    guard.release()
            if foreign:
                thread.join()
            total += returned[0] - released[0]
            settle(threads)
        return total

    return run


async def backend_wake_latency(loops: int, clock: Clock) -> float:
    """As :func:`close_latency` from a foreign thread, without a gate: the thread
    sets an event through the backend's own thread-safe call (what anygate and
    anyio's ``from_thread`` use), and a task awaits the event. The floor of any
    wakeup from a thread: one write to the loop's wakeup pipe, the loop's return
    from its poll, and the hand-over of the GIL."""
    total = 0.0
    token = anyio.lowlevel.current_token()
    backend = token.backend_class
    for _ in range(loops):
        threads = threading.active_count()
        event = anyio.Event()
        released: list[float] = []
        returned: list[float] = []

        def wake(event: anyio.Event = event) -> None:
            backend.run_sync_soon(event.set, (), token.native_token)

        thread = threading.Thread(target=call_and_time, args=(wake, released, clock))
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_and_time, event, returned, clock)
            await anyio.wait_all_tasks_blocked()
            thread.start()
        thread.join()
        total += returned[0] - released[0]
        settle(threads)
    return total


def do_nothing() -> None:
    pass


async def job_releasing_in_thread(guard: GateGuard) -> None:
    await anyio.to_thread.run_sync(guard.release)


async def job_releasing_in_loop(guard: GateGuard) -> None:
    await anyio.to_thread.run_sync(do_nothing)
    guard.release()


def thread_jobs(count: int, in_thread: bool) -> Timer:
    """``count`` jobs through a gate with a limit, one ``to_thread`` call each.

    A producer acquires the gate for each job, then starts a task that runs the
    job in a worker thread; once the gate is full, each release admits the next
    acquire. The guard is released in the worker thread if ``in_thread``, else in
    the task once the thread is done.
    """
    job = job_releasing_in_thread if in_thread else job_releasing_in_loop

    async def run(loops: int, clock: Clock) -> float:
        elapsed = 0.0
        for _ in range(loops):
            gate = Gate(limit=JOB_LIMIT, warn_after=None)
            started = clock()
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    guard = await gate.acquire()
                    tg.start_soon(job, guard)
            elapsed += clock() - started
        return elapsed

    return run


# ASGI: one request through a middleware, with hand-made receive and send.

ASGI_SCOPE: Scope = {"type": "http", "method": "GET", "path": "/items/1", "headers": []}
ASGI_START: Message = {"type": "http.response.start", "status": 200, "headers": []}
ASGI_BODY: Message = {"type": "http.response.body", "body": b"ok", "more_body": False}


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send(ASGI_START)
    await send(ASGI_BODY)


def asgi_app_factory() -> ASGIApp:
    return asgi_app


async def asgi_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def asgi_send(message: Message) -> None:
    pass


class NoOpMiddleware:
    """The floor: a middleware that wraps ``send`` and does nothing else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


def starlette_app() -> ASGIApp:
    """A minimal Starlette app: a router and one plain-text endpoint, as a
    service's cheapest request runs."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["id"])

    return cast(ASGIApp, Starlette(routes=[Route("/items/{id}", item)]))


STARLETTE_SCOPE: Scope = {
    **ASGI_SCOPE, "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
    "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}  # fmt: skip


def asgi_requests(
    make: Callable[[ASGIApp], ASGIApp], inner: Callable[[], ASGIApp] = asgi_app_factory
) -> Timer:
    async def run(loops: int, clock: Clock) -> float:
        app = make(inner())
        started = clock()
        if inner is asgi_app_factory:
            for _ in range(loops):
                await app(ASGI_SCOPE, asgi_receive, asgi_send)
        else:
            # Starlette adds to the scope: each request gets its own, as from a server.
            for _ in range(loops):
                await app(dict(STARLETTE_SCOPE), asgi_receive, asgi_send)
        return clock() - started

    return run


# The rows.


@dataclass(frozen=True)
class Row:
    section: str
    case: str
    baseline: str
    #: The case's timer and the baseline's.
    timers: tuple[Timer, Timer]
    #: The most the median ratio may be, per backend; a backend missing has no target.
    targets: dict[str, float]
    #: Repeats per pass. Each pass runs in a fresh process, and the passes of a
    #: section take turns, so that each row's repeats spread over the section's
    #: time and over several processes: what drifts over seconds, or differs
    #: from one process to the next, is then shared by all rows.
    repeats: int
    passes: int
    #: Loops per timing, or None to calibrate each side to about BLOCK seconds.
    loops: int | None
    #: How to show a timing: its unit, and what one loop is.
    unit: str
    per: str
    #: The clock. CPU time leaves out the time spent waiting while other
    #: processes run, which is most of this machine's noise: the thread's for
    #: work in the event loop's thread, the process's for work that spans
    #: threads. Latency needs the wall clock.
    clock: Clock = time.thread_time
    #: Keep the cyclic collector off while timing.
    gc_off: bool = True
    #: Collect the garbage before each repeat (untimed): long runs leave plenty.
    collect: bool = False
    #: The backends it runs on.
    backends: tuple[str, ...] = tuple(BACKENDS)
    #: Why it cannot run here, or None.
    unavailable: str | None = None


CLOCKS: dict[Clock, str] = {
    time.thread_time: "CPU, thread",
    time.process_time: "CPU, process",
    time.perf_counter: "wall",
}


def everywhere(target: float) -> dict[str, float]:
    return dict.fromkeys(BACKENDS, target)


SECTIONS = ("holds", "acquire", "tasks", "trees", "threads", "asgi")
NOOP = "no-op `with`"
ACQUIRE = "`async with gate.acquire()`"
START_SOON = "`gate.start_soon(tg, f)`"
TG_START_SOON = "`tg.start_soon(f)`"
#: The rows of the scaling table: the tasks rows of 10k and 100k tasks.
SCALING = {f"{START_SOON}, 10k tasks": 10_000, f"{START_SOON}, 100k tasks": 100_000}


def hold(case: str, timer: Timer, target: float) -> Row:
    return Row(
        "holds", case, NOOP, (timer, noop_with), everywhere(target), 201, 5, None, "ns", "hold"
    )


def acquire(
    case: str,
    baseline: str,
    timers: tuple[Timer, Timer],
    targets: dict[str, float],
    backends: tuple[str, ...] = tuple(BACKENDS),
    unavailable: str | None = None,
) -> Row:
    return Row(
        "acquire", case, baseline, timers, targets, 101, 3, None, "ns", "hold",
        backends=backends, unavailable=unavailable,
    )  # fmt: skip


def tasks(count: int, target: float | None, repeats: int, passes: int, gc_off: bool = True) -> Row:
    """A row of ``count`` tasks started, gated and not.

    With the collector on, its state is not reset before each timing: a reset
    would start both sides at the same point of the collector's cycle, and the
    number of full collections in a timing (two or three, a third of the time)
    would then be decided by which side crosses a threshold first, every time.
    In a running service a burst of tasks starts wherever the cycle happens to
    be, so each side runs twice in a timing and the repeats drift over the cycle.
    """
    label = f"{count // 1000}k tasks"
    case = f"{START_SOON}, {label}" + ("" if gc_off else ", collector on")
    return Row(
        "tasks", case, TG_START_SOON, (spawn(count, gated=True), spawn(count, gated=False)),
        {} if target is None else everywhere(target), repeats, passes, 1 if gc_off else 2,
        "ms", label, gc_off=gc_off, collect=gc_off,
    )  # fmt: skip


def rows() -> list[Row]:
    fast = None if fast_gate(1) is not None else "n/a (needs fast_acquire)"
    return [
        hold("`with gate:`", with_gate, 1.5),
        hold("`with gate.enter():`", with_enter, 2.8),
        hold('`with gate.enter("name"):`', with_named_enter, 5.0),
        # Debug mode's cost, informative: each against the same hold out of it.
        Row("holds", "`with gate:`, debug mode", "`with gate:`", (debug_with_gate, with_gate),
            {}, 41, 3, None, "ns", "hold"),
        Row("holds", "`with gate.enter():`, debug mode", "`with gate.enter():`",
            (debug_with_enter, with_enter), {}, 41, 3, None, "ns", "hold"),
        acquire(ACQUIRE, "`async with CapacityLimiter`", (gate_acquire, capacity_limiter),
                {"asyncio": 0.75, "uvloop": 0.75, "trio": 1.0}),
        acquire(f"{ACQUIRE}, `fast_acquire=True`", "`async with Semaphore(fast_acquire=True)`",
                (gate_fast_acquire, anyio_fast_semaphore), everywhere(1.0), unavailable=fast),
        acquire(ACQUIRE, "`async with asyncio.Semaphore`", (gate_acquire, asyncio_semaphore), {},
                backends=ASYNCIO_ONLY),
        acquire(ACQUIRE, "`async with trio.Semaphore`", (gate_acquire, trio_semaphore), {},
                backends=TRIO_ONLY),
        tasks(10_000, 1.1, repeats=7, passes=3),
        tasks(100_000, None, repeats=5, passes=1),
        tasks(10_000, 1.1, repeats=5, passes=3, gc_off=False),
        Row("trees", "`close()` of a gate with 10,000 children", "with 1,000 children",
            (close_wide(10_000), close_wide(1_000)), everywhere(12.0),
            7, 3, 1, "ms", "close", collect=True),
        Row("trees", "draining a chain of 10,000 gates", "a chain of 1,000 gates",
            (drain_chain(10_000), drain_chain(1_000)), everywhere(12.0),
            7, 3, 1, "ms", "close", collect=True),
        Row("threads", "`close()` woken by a release in a foreign thread",
            "the release in the event loop",
            (close_latency(foreign=True), close_latency(foreign=False)), everywhere(3.0),
            101, 3, 1, "us", "close", clock=time.perf_counter),
        Row("threads", "the backend's own wake from a foreign thread, no gate",
            "`close()` woken by a release in the event loop",
            (backend_wake_latency, close_latency(foreign=False)), {},
            101, 3, 1, "us", "wake", clock=time.perf_counter),
        Row("threads", "`close()` woken by a release in a foreign thread",
            "the backend's own wake from a foreign thread, no gate",
            (close_latency(foreign=True), backend_wake_latency), {},
            101, 3, 1, "us", "wake", clock=time.perf_counter),
        Row("threads", f"2,000 `to_thread` jobs releasing in the worker thread, limit={JOB_LIMIT}",
            "releasing in the event loop",
            (thread_jobs(2_000, in_thread=True), thread_jobs(2_000, in_thread=False)),
            everywhere(1.2), 7, 3, 1, "ms", "2,000 jobs", clock=time.process_time, collect=True),
        Row("asgi", "`GateMiddleware(app, Gate())`, a request", "no-op middleware wrapping `send`",
            (asgi_requests(lambda app: GateMiddleware(app, Gate())), asgi_requests(NoOpMiddleware)),
            everywhere(1.5), 101, 3, None, "ns", "request"),
        Row("asgi", "`GateMiddleware(app, Gate())` around a Starlette app, a request",
            "no-op middleware around the same app",
            (asgi_requests(lambda app: GateMiddleware(app, Gate()), starlette_app),
             asgi_requests(NoOpMiddleware, starlette_app)),
            {}, 101, 3, None, "ns", "request"),
    ]  # fmt: skip


# Timing.


@dataclass
class Result:
    row: Row
    backend: str
    #: Per recorded repeat: seconds per loop of the case, and of the baseline.
    case: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    #: The median ratio of each pass.
    passes: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.case, self.baseline, strict=True)]


async def calibrate(timer: Timer, clock: Clock) -> int:
    """Loops that take ``timer`` about BLOCK seconds, undisturbed."""
    loops = 1
    while (elapsed := await timer(loops, clock)) < BLOCK / 4:
        loops *= 2
    # The quickest of a few runs: a run that was interrupted would make the
    # block of this side shorter than the other's, and less often interrupted.
    elapsed = min([elapsed, *[await timer(loops, clock) for _ in range(4)]])
    return max(1, round(loops * BLOCK / elapsed))


async def interleave(result: Result, repeats: int) -> None:
    """Time the row's case and baseline side by side, ``repeats`` times."""
    row = result.row
    clock = row.clock
    case, baseline = row.timers
    if row.loops is None:
        # Each side gets its own loops, so that both take as long and an
        # interruption is as likely to land on either: the ratio is per loop.
        case_loops = await calibrate(case, clock)
        baseline_loops = await calibrate(baseline, clock)
    else:
        case_loops = baseline_loops = row.loops
    warmup = WARMUP if row.loops is None else 1
    for repeat in range(warmup + repeats):
        if row.collect:
            gc.collect()
        with gc_paused(row.gc_off):
            # Alternate which side goes first, so neither always follows the other.
            if repeat % 2:
                b = await baseline(baseline_loops, clock)
                a = await case(case_loops, clock)
            else:
                a = await case(case_loops, clock)
                b = await baseline(baseline_loops, clock)
        if repeat >= warmup:
            result.case.append(a / case_loops)
            result.baseline.append(b / baseline_loops)
    gc.collect()


def measure(row: Row, backend: str, repeats: int) -> Result:
    result = Result(row, backend)
    name, options = BACKENDS[backend]
    anyio.run(interleave, result, repeats, backend=name, backend_options=options)
    return result


def worker(index: int, backend: str, repeats: int) -> None:
    """Run one pass of a row on a backend, and print its timings as JSON."""
    result = measure(rows()[index], backend, repeats)
    json.dump({"case": result.case, "baseline": result.baseline}, sys.stdout)


def run_pass(index: int, backend: str, repeats: int, result: Result) -> None:
    """Run one pass in a fresh process, and add its timings to ``result``."""
    command = [sys.executable, __file__, "--worker", str(index), backend, str(repeats)]
    # The worker's errors and warnings go straight to this process's stderr.
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    timings = json.loads(done.stdout)
    result.case += timings["case"]
    result.baseline += timings["baseline"]
    pairs = zip(timings["case"], timings["baseline"], strict=True)
    result.passes.append(statistics.median(a / b for a, b in pairs))


def plan(sections: Iterable[str]) -> Iterator[tuple[int, Row, str, int]]:
    """The passes to run: (row index, row, backend, pass), section by section,
    and within a section the rows' passes taking turns."""
    table = list(enumerate(rows()))
    for section in sections:
        members = [(i, row) for i, row in table if row.section == section and not row.unavailable]
        for number in range(max((row.passes for _, row in members), default=0)):
            for index, row in members:
                if number < row.passes:
                    for backend in row.backends:
                        yield index, row, backend, number


def bytes_per_guard(count: int = 100_000) -> float:
    gate = Gate()
    guards: list[GateGuard | None] = [None] * count
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            guards[i] = gate.enter()
        return (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
        for guard in guards:
            if guard is not None:
                guard.release()


# Reporting.


def quartiles(values: Iterable[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def show(seconds: float, unit: str) -> str:
    value = seconds * {"ns": 1e9, "us": 1e6, "ms": 1e3}[unit]
    text = f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return f"{text} {'µs' if unit == 'us' else unit}"


def verdict(result: Result) -> tuple[str, str]:
    target = result.row.targets.get(result.backend)
    if target is None:
        return "", ""
    met = statistics.median(result.ratios) <= target
    text = "met" if met else "**MISSED**"
    # The passes disagree about the target: another run may well say the other.
    if len(result.passes) > 1 and min(result.passes) <= target <= max(result.passes):
        text += " (borderline)"
    return f"<= {target:g}x", text


def print_section(section: str, results: list[Result], unavailable: list[Row]) -> None:
    print(
        "| backend | case | vs | ratio (median) | spread (IQR; pass medians) | target | verdict "
        "| case, each | baseline, each | clock | repeats |"
    )
    print("|---|---|---|---:|---|---|---|---:|---:|---|---:|")
    for backend in BACKENDS:
        for result in results:
            if result.backend != backend or result.row.section != section:
                continue
            row = result.row
            q1, median, q3 = quartiles(result.ratios)
            target, met = verdict(result)
            case = show(statistics.median(result.case), row.unit)
            base = show(statistics.median(result.baseline), row.unit)
            spread = f"{q1:.2f} to {q3:.2f}"
            if len(result.passes) > 1:
                spread += f"; passes {min(result.passes):.2f} to {max(result.passes):.2f}"
            print(
                f"| {backend} | {row.case} | {row.baseline} | {median:.3f}x "
                f"| {spread} | {target} | {met} | {case} / {row.per} "
                f"| {base} / {row.per} | {CLOCKS[row.clock]} | {len(result.ratios)} |"
            )
        for row in unavailable:
            if row.section == section and backend in row.backends:
                limit = row.targets.get(backend)
                goal = "" if limit is None else f"<= {limit:g}x"
                print(
                    f"| {backend} | {row.case} | {row.baseline} | {row.unavailable} "
                    f"| | {goal} | | | | | |"
                )


def print_scaling(results: list[Result]) -> None:
    """The gate's own cost per task, (gated - ungated) / tasks, per repeat."""
    print(
        "| backend | gate's cost per task, 10k tasks: median (IQR) "
        "| at 100k tasks: median (IQR) | ungated, per task: 10k | 100k |"
    )
    print("|---|---:|---:|---:|---:|")
    for backend in BACKENDS:
        costs, bare = [], []
        for case, count in SCALING.items():
            result = next(r for r in results if r.backend == backend and r.row.case == case)
            pairs = zip(result.case, result.baseline, strict=True)
            q1, median, q3 = quartiles((a - b) / count * 1e9 for a, b in pairs)
            costs.append(f"{median:.0f} ns ({q1:.0f} to {q3:.0f})")
            bare.append(f"{statistics.median(result.baseline) / count * 1e9:.0f} ns")
        print(f"| {backend} | {costs[0]} | {costs[1]} | {bare[0]} | {bare[1]} |")


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_machine() -> None:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"- CPU: {cpu_model()}, {os.cpu_count()} cores ({usable} usable)")
    print(f"- OS: {platform.platform()}; load average (1, 5, 15 min) at the start: {load}")
    print(f"- Python {platform.python_version()} ({platform.python_implementation()})")
    packages = ("anygate", "anyio", "trio", "uvloop")
    print("- " + ", ".join(f"{name} {version(name)}" for name in packages))


def draw(results: list[Result], path: Path) -> None:
    """The median ratio of each row, a bar per backend, with its IQR and target."""
    import matplotlib  # drawn at the end: the import takes a second

    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    def label(row: Row) -> str:
        return "\n".join(
            textwrap.wrap(row.case.replace("`", ""), 40)
            + textwrap.wrap(f"vs {row.baseline}".replace("`", ""), 40)
        )

    labels = list(dict.fromkeys(label(result.row) for result in results))
    colors = dict(zip(BACKENDS, ["tab:blue", "tab:green", "tab:orange"], strict=True))
    height = 0.8 / len(BACKENDS)
    fig, ax = plt.subplots(figsize=(12, 0.8 * len(labels) + 1.5))
    for offset, backend in enumerate(BACKENDS):
        ys: list[float] = []
        medians: list[float] = []
        errors: tuple[list[float], list[float]] = ([], [])
        for result in results:
            if result.backend != backend:
                continue
            q1, median, q3 = quartiles(result.ratios)
            y = labels.index(label(result.row)) + (offset - 1) * height
            ys.append(y)
            medians.append(median)
            errors[0].append(median - q1)
            errors[1].append(q3 - median)
            target = result.row.targets.get(backend)
            if target is not None:
                ax.plot([target, target], [y - height / 2, y + height / 2], color="black")
        ax.barh(ys, medians, height=height, color=colors[backend], label=backend)
        ax.errorbar(medians, ys, xerr=errors, fmt="none", ecolor="black", elinewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("case / baseline: median of the interleaved repeats (log scale), whiskers: IQR")
    ax.legend(loc="lower right", title="black ticks: targets")
    ax.set_title(f"anygate against its floor and its peers, Python {platform.python_version()}")
    fig.tight_layout()
    # No timestamp: the committed chart changes only with the numbers.
    fig.savefig(path, metadata={"Date": None}, format="svg", bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the repeats")
    parser.add_argument(
        "--section", action="append", choices=SECTIONS, help="only these (and no chart)"
    )
    parser.add_argument("--no-chart", action="store_true", help="leave holds.svg as it is")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        index, backend, repeats = args.worker
        worker(int(index), backend, int(repeats))
        return
    sections: tuple[str, ...] = tuple(args.section or SECTIONS)
    started = time.monotonic()
    print_machine()

    results: dict[tuple[int, str], Result] = {}
    for index, row, backend, number in plan(sections):
        result = results.setdefault((index, backend), Result(row, backend))
        # Odd, for a median that is one of the repeats.
        repeats = max(3, round(row.repeats * (0.2 if args.quick else 1.0)) | 1)
        run_pass(index, backend, repeats, result)
        q1, median, q3 = quartiles(result.ratios)
        print(
            f"{backend}: {row.case} vs {row.baseline}, pass {number + 1} of {row.passes}: "
            f"{result.passes[-1]:.3f}x; so far {median:.3f}x ({q1:.2f} to {q3:.2f})",
            file=sys.stderr,
            flush=True,
        )
    done = list(results.values())
    unavailable = [row for row in rows() if row.section in sections and row.unavailable]

    for section in sections:
        print(f"\n### {section}\n")
        print_section(section, done, unavailable)
    if "tasks" in sections:
        print("\n### the gate's cost per task, at 10k and at 100k tasks\n")
        print_scaling(done)
    print(f"\nMemory: {bytes_per_guard():.1f} bytes per held unnamed guard (tracemalloc)")
    if not (args.no_chart or args.section):
        chart = Path(__file__).with_name("holds.svg")
        draw(done, chart)
        print(f"Chart: {chart}")
    print(f"Bench time: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
