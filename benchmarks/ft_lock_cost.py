"""What a ``threading.Lock`` costs against the list that counts holds.

On a gate without a limit, a hold is a ``list.append`` and its release a
``list.pop``: atomic in CPython, with or without the GIL. This measures what
taking a ``threading.Lock`` around them instead would cost, to decide whether
free-threaded builds should lock::

    PYTHON_GIL=0 $(pyenv root)/versions/3.13.5t/bin/python benchmarks/ft_lock_cost.py

Each variant is a tight loop timed with :mod:`timeit`; the variants take turns
round after round, so that drift in the machine's speed hits them all alike.
Reported: ns per iteration with the empty loop's time taken off, median and
best over the rounds. "2 threads" runs the loop in two threads at once on one
shared lock or list, as contention on a free-threaded build would.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import sysconfig
import threading
import timeit
from collections.abc import Callable

LOOPS = {
    "empty loop": "for _ in r: pass",
    "acquire() + release()": "for _ in r: acquire(); release()",
    "with lock:": "for _ in r:\n    with lock: pass",
    "append() + pop()": "for _ in r: append(None); pop()",
    # What locking on free-threaded builds would make of a hold and its release.
    "both, each under the lock": (
        "for _ in r: acquire(); append(None); release(); acquire(); pop(); release()"
    ),
}


def one_thread(body: str, number: int) -> Callable[[], float]:
    """A timer of ``number`` iterations of ``body`` on fresh objects."""

    def run() -> float:
        lock = threading.Lock()
        holds: list[None] = []
        namespace = {
            "r": range(number),
            "lock": lock,
            "acquire": lock.acquire,
            "release": lock.release,
            "append": holds.append,
            "pop": holds.pop,
        }
        return timeit.Timer(body, globals=namespace).timeit(1)

    return run


def two_threads(body: str, number: int) -> Callable[[], float]:
    """Wall time of two threads each running ``body`` on one shared lock and list."""

    def run() -> float:
        lock = threading.Lock()
        holds: list[None] = []
        namespace = {
            "r": range(number),
            "lock": lock,
            "acquire": lock.acquire,
            "release": lock.release,
            "append": holds.append,
            "pop": holds.pop,
        }
        timer = timeit.Timer(body, globals=namespace)
        start = threading.Barrier(3)
        threads = [
            threading.Thread(target=lambda: (start.wait(), timer.timeit(1))) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        start.wait()
        began = timeit.default_timer()
        for thread in threads:
            thread.join()
        return timeit.default_timer() - began

    return run


def measure(make: Callable[[str, int], Callable[[], float]], number: int, rounds: int) -> None:
    timers = {name: make(body, number) for name, body in LOOPS.items()}
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer() / number * 1e9)
    empty = statistics.median(times["empty loop"])
    print(f"{'':28} {'median':>8} {'best':>8}   ns per iteration, the empty loop's taken off")
    for name, samples in times.items():
        if name == "empty loop":
            print(f"{name:28} {empty:8.1f} {min(samples):8.1f}   (not taken off)")
        else:
            print(
                f"{name:28} {statistics.median(samples) - empty:8.1f} {min(samples) - empty:8.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=200_000, help="iterations per timing")
    parser.add_argument("--rounds", type=int, default=31, help="timings of each variant")
    args = parser.parse_args()
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"{platform.python_implementation()} {platform.python_version()}"
        f"{' free-threaded' if free_threaded else ''}, GIL {'on' if gil else 'off'},"
        f" {args.rounds} rounds of {args.number} iterations"
    )
    print("\none thread")
    measure(one_thread, args.number, args.rounds)
    print("\n2 threads on one lock or list (wall time / iterations of one thread)")
    measure(two_threads, args.number, args.rounds)


if __name__ == "__main__":
    main()
