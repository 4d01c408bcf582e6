"""ns per hold of anygate's paths, against a bare no-op ``with``, on each backend.

Every case runs inside ``anyio.run`` on its backend, timed by pyperf (worker
processes, warm-ups, outlier-aware statistics). The table at the end gives the
mean per hold and its ratio to the floor measured on the same backend.

Extra arguments go to pyperf, e.g. ``make bench BENCH_ARGS=--rigorous``.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pyperf

from anygate import Gate

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


# name -> (body, target ratio to the floor, or None)
CASES: dict[str, tuple[Callable[[int], Awaitable[float]], float | None]] = {
    "no-op with (floor)": (floor, None),
    "with gate:": (with_gate, 1.5),
    "with gate.enter():": (with_enter, 2.8),
    'with gate.enter("name"):': (with_named_enter, 5.0),
    "async with gate.acquire(): (limit)": (async_with_acquire, None),
}


def on_backend(backend: str, body: Callable[[int], Awaitable[float]]) -> Callable[[int], float]:
    name, options = BACKENDS[backend]

    def timed(loops: int) -> float:
        return anyio.run(body, loops, backend=name, backend_options=options)

    return timed


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "anygate ns per hold"
    results: dict[tuple[str, str], pyperf.Benchmark] = {}
    for backend in BACKENDS:
        for case, (body, _) in CASES.items():
            bench = runner.bench_time_func(f"{backend}: {case}", on_backend(backend, body))
            if bench is not None:
                results[backend, case] = bench
    if runner.args.worker or not results:
        return

    print()
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.platform()}")
    print()
    print("| backend | case | ns per hold | x floor | target |")
    print("|---|---|---:|---:|---|")
    for backend in BACKENDS:
        floor_ns = results[backend, "no-op with (floor)"].mean() * 1e9
        for case, (_, target) in CASES.items():
            ns = results[backend, case].mean() * 1e9
            ratio = ns / floor_ns
            verdict = (
                ""
                if target is None
                else f"<= {target}x: " + ("met" if ratio <= target else "MISSED")
            )
            print(f"| {backend} | `{case}` | {ns:.0f} | {ratio:.2f} | {verdict} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
