"""A synchronous program that drains its worker threads through a gate.

The program has no event loop of its own: anyio's blocking portal runs one in a
background thread, and the gate's ``close()`` is awaited there. The workers are
plain threads. Each holds the gate while it writes a batch, entering and
releasing from its own thread, which a gate allows without a lock.

Shutdown calls ``portal.call(gate.close)``: new batches are refused at once, and
the call returns when the last batch in progress is written. Only then are the
files read back, so none of them can still be half-written.

    python examples/sync_portal.py [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

from anyio.from_thread import start_blocking_portal

from anygate import Gate, GateClosed

WORKERS = 4
LINES_PER_BATCH = 200


def worker(gate: Gate, directory: Path, index: int, started: threading.Barrier) -> int:
    """Write batches until the gate refuses one; return how many were written."""
    batches = 0
    while True:
        try:
            guard = gate.enter(f"worker {index}")
        except GateClosed:
            return batches
        with guard, (directory / f"{index}-{batches}.txt").open("w") as out:
            for line in range(LINES_PER_BATCH):
                out.write(f"{line}\n")
            batches += 1
        if batches == 1:
            started.wait()


def main(backend: str) -> int:
    gate = Gate("batch writer")
    written: list[int] = [0] * WORKERS
    with tempfile.TemporaryDirectory() as tmp, start_blocking_portal(backend) as portal:
        directory = Path(tmp)
        started = threading.Barrier(WORKERS + 1)

        def run(index: int) -> None:
            written[index] = worker(gate, directory, index, started)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
        for thread in threads:
            thread.start()
        started.wait()  # every worker has written a batch and is writing more

        portal.call(gate.close)  # refuse new batches, wait for the ones in progress
        files = sorted(directory.iterdir())
        complete = sum(len(path.read_text().splitlines()) == LINES_PER_BATCH for path in files)
        for thread in threads:
            thread.join()

    print(f"batches written: {sum(written)}, files complete after close(): {complete}")
    ok = complete == len(files) == sum(written) and gate.count == 0
    print("all batches complete" if ok else "A BATCH WAS STILL BEING WRITTEN")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    sys.exit(main(parser.parse_args().backend))
