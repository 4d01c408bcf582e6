"""Hypercorn's shutdown, with the gates closed first: :func:`shutdown_trigger`.

Hypercorn is not a dependency: this module does not import it. It needs
nothing but anyio, and works with Hypercorn's asyncio, uvloop and trio workers.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import FrameType

import anyio

from ._gate import Gate
from ._servers import check_gates, check_signals, close_all
from ._util import check_seconds

__all__ = ["shutdown_trigger"]


async def _close_until_drained_or_signal(
    gates: tuple[Gate, ...], grace: float | None, signals: AsyncIterator[int]
) -> None:
    async with anyio.create_task_group() as tg:

        async def stop_on_second_signal() -> None:
            async for _ in signals:
                tg.cancel_scope.cancel()

        tg.start_soon(stop_on_second_signal)
        await close_all(gates, grace)
        tg.cancel_scope.cancel()


def shutdown_trigger(
    *gates: Gate,
    grace: float | None = None,
    signals: Iterable[int] | None = None,
) -> Callable[[], Awaitable[None]]:
    """A ``shutdown_trigger`` for Hypercorn's ``serve()`` that closes ``gates`` first.

    The trigger waits for one of ``signals``, closes every gate at once with
    ``grace``, waits until they have all drained, and returns, which tells
    Hypercorn to stop: it then closes its listeners, waits for the connections
    (up to its ``graceful_timeout``, a backstop, as only what the gates let
    through is left), and runs the ASGI lifespan shutdown. While the gates
    drain, the server still accepts connections, so that a request arriving
    then is refused by its gate (a 503 from
    :class:`~anygate.asgi.GateMiddleware`), not by a closed socket, and the
    requests in progress finish, long-polls and streams cancelled after the
    grace::

        from hypercorn.asyncio import serve  # or hypercorn.trio
        from anygate.hypercorn import shutdown_trigger

        await serve(app, config, shutdown_trigger=shutdown_trigger(gate, grace=5))

    A second signal while the gates drain stops the wait: the server stops at
    once, and its own ``graceful_timeout`` bounds what is left. Given a
    trigger, Hypercorn installs no signal handlers of its own; the trigger
    listens with :func:`anyio.open_signal_receiver` from the moment Hypercorn
    calls it, after its startup. The server then returns normally, and the
    process exits with status 0. While Hypercorn then finishes its own
    shutdown (its connections, the lifespan shutdown), one more of the signals
    is absorbed, so that an impatient second one does not cut it short; the
    next goes to whatever handled them before.

    Each call of the returned function waits for signals afresh, so one trigger
    may serve successive runs, but the gates stay closed after the first
    (:meth:`~anygate.Gate.reopen` them between runs).

    :param gates: the gates to close, such as the root of a tree of gates
    :param grace: seconds before the gates' cancellable holders are cancelled,
        or ``None`` to never cancel them; see :meth:`~anygate.Gate.close_nowait`
    :param signals: the signal numbers that start the shutdown, or ``None``
        for SIGINT and SIGTERM
    :raises TypeError: if no gate is given, if one is not a :class:`~anygate.Gate`,
        or if ``grace`` or ``signals`` has the wrong type
    :raises ValueError: if ``grace`` is negative or NaN, or ``signals`` is empty
    """
    checked = check_gates("shutdown_trigger", gates)
    seconds = check_seconds("grace", grace)
    signums = check_signals((signal.SIGINT, signal.SIGTERM) if signals is None else signals)

    async def trigger() -> None:
        with anyio.open_signal_receiver(*signums) as received:
            async for _ in received:
                break
            await _close_until_drained_or_signal(checked, seconds, received)
        _absorb_one_more(signums)

    return trigger


def _absorb_one_more(signums: tuple[signal.Signals, ...]) -> None:
    """After the trigger returns, Hypercorn still closes its connections and
    runs the lifespan shutdown, with the signals' previous handlers back: an
    impatient second Ctrl-C or SIGTERM would cut that short and end the
    process by the signal. One more of them is absorbed; the next goes to the
    previous handler again. Only the main thread can set handlers: elsewhere
    there is nothing to do."""
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def absorb(signum: int, frame: FrameType | None) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    try:
        for signum in signums:
            signal.signal(signum, absorb)
    except ValueError:  # not the main thread
        for number, handler in previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(number, handler)
