"""anygate against a bare no-op ``with`` and against what users would write instead.

Every case runs inside ``anyio.run`` on its backend (asyncio, uvloop, trio),
timed by pyperf (worker processes, warm-ups, outlier-aware statistics). The
tables at the end give:

- ns per hold of anygate's paths and of the alternatives, with the ratio to
  the floor measured on the same backend;
- the latency of ``close()`` from the last release, the added cost per task of
  gating 10,000 tasks, and how that cost scales to 100,000 tasks;
- bytes per held guard, from tracemalloc.

``benchmarks/holds.svg`` gets the first table as a bar chart.

Extra arguments go to pyperf, e.g. ``make bench BENCH_ARGS=--rigorous``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import platform
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pyperf

from anygate import Gate, GateGuard

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


class NoOp:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass


async def floor(loops: int) -> float:
    noop = NoOp()
    started = pyperf.perf_counter()
    for _ in range(loops):
        with noop:
            pass
    return pyperf.perf_counter() - started


async def with_gate(loops: int) -> float:
    gate = Gate()
    started = pyperf.perf_counter()
    for _ in range(loops):
        with gate:
            pass
    return pyperf.perf_counter() - started


async def with_enter(loops: int) -> float:
    gate = Gate()
    started = pyperf.perf_counter()
    for _ in range(loops):
        with gate.enter():
            pass
    return pyperf.perf_counter() - started


async def with_named_enter(loops: int) -> float:
    gate = Gate()
    started = pyperf.perf_counter()
    for _ in range(loops):
        with gate.enter("GET /x"):
            pass
    return pyperf.perf_counter() - started


async def async_with_acquire(loops: int) -> float:
    gate = Gate(limit=1000)
    started = pyperf.perf_counter()
    for _ in range(loops):
        async with gate.acquire():
            pass
    return pyperf.perf_counter() - started


class CountingGate:
    """The gate a user would write by hand: a counter and an anyio Event."""

    __slots__ = ("closed", "count", "drained")

    def __init__(self) -> None:
        self.count = 0
        self.closed = False
        self.drained: anyio.Event | None = None

    def __enter__(self) -> None:
        if self.closed:
            raise RuntimeError("closed")
        self.count += 1

    def __exit__(self, *exc_info: object) -> None:
        self.count -= 1
        if self.closed and self.count == 0 and self.drained is not None:
            self.drained.set()


async def counter_and_event(loops: int) -> float:
    gate = CountingGate()
    started = pyperf.perf_counter()
    for _ in range(loops):
        with gate:
            pass
    return pyperf.perf_counter() - started


async def capacity_limiter(loops: int) -> float:
    limiter = anyio.CapacityLimiter(math.inf)
    started = pyperf.perf_counter()
    for _ in range(loops):
        # A gate's holders are not tasks, so each borrows on behalf of its own token.
        token = object()
        await limiter.acquire_on_behalf_of(token)
        limiter.release_on_behalf_of(token)
    return pyperf.perf_counter() - started


async def capacity_limiter_nowait(loops: int) -> float:
    limiter = anyio.CapacityLimiter(math.inf)
    started = pyperf.perf_counter()
    for _ in range(loops):
        token = object()
        limiter.acquire_on_behalf_of_nowait(token)
        limiter.release_on_behalf_of(token)
    return pyperf.perf_counter() - started


async def asyncio_semaphore(loops: int) -> float:
    semaphore = asyncio.Semaphore(1_000_000)
    started = pyperf.perf_counter()
    for _ in range(loops):
        async with semaphore:
            pass
    return pyperf.perf_counter() - started


async def trio_capacity_limiter(loops: int) -> float:
    import trio  # only the trio backend has it

    limiter = trio.CapacityLimiter(math.inf)
    started = pyperf.perf_counter()
    for _ in range(loops):
        async with limiter:
            pass
    return pyperf.perf_counter() - started


@dataclass(frozen=True)
class Case:
    body: Callable[[int], Awaitable[float]]
    #: Who offers it: "floor", "anygate" or "alternative".
    kind: str
    #: The most ns per hold allowed, as a multiple of the floor.
    target: float | None = None
    #: The backends it runs on, or None for all.
    backends: tuple[str, ...] | None = None


HOLD_CASES: dict[str, Case] = {
    "no-op with (floor)": Case(floor, "floor"),
    "with gate:": Case(with_gate, "anygate", 1.5),
    "with gate.enter():": Case(with_enter, "anygate", 2.8),
    'with gate.enter("name"):': Case(with_named_enter, "anygate", 5.0),
    "async with gate.acquire(): (limit)": Case(async_with_acquire, "anygate"),
    "counter + anyio.Event": Case(counter_and_event, "alternative"),
    "CapacityLimiter.acquire_on_behalf_of": Case(capacity_limiter, "alternative"),
    "CapacityLimiter.acquire_on_behalf_of_nowait": Case(capacity_limiter_nowait, "alternative"),
    "async with asyncio.Semaphore": Case(
        asyncio_semaphore, "alternative", None, ("asyncio", "uvloop")
    ),
    "async with trio.CapacityLimiter": Case(trio_capacity_limiter, "alternative", None, ("trio",)),
}


async def close_latency(loops: int) -> float:
    """Seconds from the last release until the task awaiting close() runs on."""
    total = 0.0
    for _ in range(loops):
        gate = Gate(warn_after=None)
        guard = gate.enter()
        returned: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_and_time, gate, returned)
            await anyio.wait_all_tasks_blocked()
            released = pyperf.perf_counter()
            guard.release()
        total += returned[0] - released
    return total


async def close_and_time(gate: Gate, returned: list[float]) -> None:
    await gate.close()
    returned.append(pyperf.perf_counter())


async def task_body() -> None:
    await anyio.lowlevel.checkpoint()


def tasks(count: int, gated: bool) -> Callable[[int], Awaitable[float]]:
    """Start ``count`` tasks that each cross a checkpoint, with or without the gate.

    Gated tasks are started with ``gate.start_soon``, which holds the gate from
    before each task starts until it ends; then ``close()`` waits for them all.
    """

    async def run(loops: int) -> float:
        started = pyperf.perf_counter()
        for _ in range(loops):
            gate = Gate(warn_after=None)
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    if gated:
                        gate.start_soon(tg, task_body)
                    else:
                        tg.start_soon(task_body)
                if gated:
                    await gate.close()
        return pyperf.perf_counter() - started

    return run


SHUTDOWN_CASES: dict[str, Callable[[int], Awaitable[float]]] = {
    "close() latency from the last release": close_latency,
    "10k tasks": tasks(10_000, gated=False),
    "10k gated tasks + close()": tasks(10_000, gated=True),
    "100k tasks": tasks(100_000, gated=False),
    "100k gated tasks + close()": tasks(100_000, gated=True),
}


def on_backend(backend: str, body: Callable[[int], Awaitable[float]]) -> Callable[[int], float]:
    name, options = BACKENDS[backend]

    def timed(loops: int) -> float:
        return anyio.run(body, loops, backend=name, backend_options=options)

    return timed


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


def runs_on(case: Case, backend: str) -> bool:
    return case.backends is None or backend in case.backends


def main() -> None:
    runner = pyperf.Runner()
    runner.parse_args()
    runner.metadata["description"] = "anygate ns per hold"
    benches: dict[tuple[str, str], pyperf.Benchmark] = {}
    for backend in BACKENDS:
        cases = {name: case.body for name, case in HOLD_CASES.items() if runs_on(case, backend)}
        processes = runner.args.processes
        for name, body in {**cases, **SHUTDOWN_CASES}.items():
            # A run of 100k tasks takes seconds: fewer worker processes keep the
            # whole bench in minutes, and each still gives several values.
            if "100k" in name:
                runner.args.processes = min(processes, 3)
            bench = runner.bench_time_func(f"{backend}: {name}", on_backend(backend, body))
            runner.args.processes = processes
            if bench is not None:
                benches[backend, name] = bench
    # Workers only time; the main process gathers and reports.
    if runner.args.worker or not benches:
        return
    holds = {key: bench.mean() * 1e9 for key, bench in benches.items() if key[1] in HOLD_CASES}
    shutdown = {key: bench.mean() for key, bench in benches.items() if key[1] in SHUTDOWN_CASES}

    print()
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.platform()}")
    print()
    print_holds(holds)
    print()
    print_shutdown(shutdown)
    print()
    print(f"Memory: {bytes_per_guard():.1f} bytes per held unnamed guard (tracemalloc)")
    chart = Path(__file__).with_name("holds.svg")
    draw(holds, chart)
    print(f"Chart: {chart}")
    sys.stdout.flush()


def print_holds(holds: dict[tuple[str, str], float]) -> None:
    print("| backend | case | ns per hold | x floor | target |")
    print("|---|---|---:|---:|---|")
    for backend in BACKENDS:
        floor_ns = holds[backend, "no-op with (floor)"]
        for name, case in HOLD_CASES.items():
            if not runs_on(case, backend):
                continue
            ns = holds[backend, name]
            ratio = ns / floor_ns
            verdict = ""
            if case.target is not None:
                verdict = f"<= {case.target}x: " + ("met" if ratio <= case.target else "MISSED")
            print(f"| {backend} | `{name}` | {ns:.0f} | {ratio:.2f} | {verdict} |")


def print_shutdown(shutdown: dict[tuple[str, str], float]) -> None:
    print(
        "| backend | close() latency from the last release | added cost per gated task "
        "(10k tasks) | 100k gated tasks / 10k gated tasks | the same, ungated |"
    )
    print("|---|---:|---:|---|---:|")
    for backend in BACKENDS:
        latency = shutdown[backend, "close() latency from the last release"]
        bare = shutdown[backend, "10k tasks"]
        gated = shutdown[backend, "10k gated tasks + close()"]
        scaled = shutdown[backend, "100k gated tasks + close()"] / gated
        bare_scaled = shutdown[backend, "100k tasks"] / bare
        verdict = "<= 12x: " + ("met" if scaled <= 12 else "MISSED")
        print(
            f"| {backend} | {latency * 1e6:.1f} us | {(gated - bare) / 10_000 * 1e9:.0f} ns "
            f"| {scaled:.1f}x ({verdict}) | {bare_scaled:.1f}x |"
        )


def draw(holds: dict[tuple[str, str], float], path: Path) -> None:
    """Bars of ns per hold, a group per case and a color per backend.

    anygate's paths come first, in bold; each backend's no-op floor is a dashed
    line of its color.
    """
    import matplotlib  # only the main process draws

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    colors = dict(zip(BACKENDS, ["tab:blue", "tab:green", "tab:orange"], strict=True))
    names = [name for name, case in HOLD_CASES.items() if case.kind != "floor"]
    height = 0.8 / len(BACKENDS)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) + 1.5))
    for offset, backend in enumerate(BACKENDS):
        rows = [(i, holds[backend, n]) for i, n in enumerate(names) if (backend, n) in holds]
        ax.barh(
            [i + (offset - 1) * height for i, _ in rows],
            [ns for _, ns in rows],
            height=height,
            color=colors[backend],
            label=backend,
        )
        ax.axvline(holds[backend, "no-op with (floor)"], color=colors[backend], linestyle="--")
    ax.set_yticks(range(len(names)), names)
    for label, name in zip(ax.get_yticklabels(), names, strict=True):
        if HOLD_CASES[name].kind == "anygate":
            label.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ns per hold, log scale (dashed: a no-op `with`, per backend)")
    ax.legend(loc="lower right")
    ax.set_title(f"anygate (bold) against the alternatives, Python {platform.python_version()}")
    fig.tight_layout()
    # No timestamp: the committed chart changes only with the numbers.
    fig.savefig(path, metadata={"Date": None}, format="svg")
    plt.close(fig)


if __name__ == "__main__":
    main()
