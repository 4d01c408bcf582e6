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
) -> bool:
    """Close ``gates`` and wait for their drain, or for one more signal.

    :return: whether the gates drained (``False``: a second signal came first)
    """
    async with anyio.create_task_group() as tg:

        async def stop_on_second_signal() -> None:
            async for _ in signals:
                tg.cancel_scope.cancel()

        tg.start_soon(stop_on_second_signal)
        await close_all(gates, grace)
        tg.cancel_scope.cancel()
        return True
    # The second signal cancelled the wait.
    return False


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

    Given a trigger, Hypercorn installs no signal handlers of its own; the
    trigger listens with :func:`anyio.open_signal_receiver` from the moment
    Hypercorn calls it, after its startup. The server then returns normally,
    and the process exits with status 0. While Hypercorn then finishes its own
    shutdown (its connections, the lifespan shutdown), one more of the signals
    is absorbed, so that an impatient second one does not cut it short; the
    next goes to whatever handled them before.

    A second signal while the gates drain stops the wait: the trigger returns
    at once, and the server stops without waiting for the gates. Its own
    ``graceful_timeout`` then bounds what is left, except on Hypercorn's
    asyncio worker (not uvloop's) from Python 3.12.1 on, which waits for
    every connection before that timeout starts (Hypercorn issue 308): a
    request that never ends then keeps the process alive. No signal is
    absorbed after a second one, so a third goes to whatever handled them
    before the trigger (by default, it ends the process).

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
        # asyncio's loop leaves SIG_DFL behind, not the handler it found: put
        # back what was there before, as trio does.
        previous = {signum: signal.getsignal(signum) for signum in signums}
        try:
            with anyio.open_signal_receiver(*signums) as received:
                async for _ in received:
                    break
                drained = await _close_until_drained_or_signal(checked, seconds, received)
        finally:
            _set_handlers(previous)
        if drained:
            _absorb_one_more(previous)

    return trigger


_Handlers = dict[signal.Signals, "Callable[[int, FrameType | None], object] | int | None"]


def _set_handlers(handlers: _Handlers) -> None:
    """Set each signal's handler, where Python can (``None``: set outside
    Python) and may (only in the main thread; elsewhere there is nothing to
    do, as no receiver could have been opened there)."""
    for signum, handler in handlers.items():
        if handler is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signum, handler)


def _absorb_one_more(previous: _Handlers) -> None:
    """After the trigger returns, Hypercorn still closes its connections and
    runs the lifespan shutdown, with the signals' previous handlers back: an
    impatient second Ctrl-C or SIGTERM would cut that short and end the
    process by the signal. One more of them is absorbed; the next goes to the
    previous handler again."""

    def absorb(signum: int, frame: FrameType | None) -> None:
        _set_handlers(previous)

    _set_handlers(dict.fromkeys(previous, absorb))
