from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from time import monotonic
from typing import NamedTuple, cast

from anyio import CancelScope

from ._wakeup import LoopRef

_logger = logging.getLogger("anygate")

#: How many _holders a slow-close warning lists at the most.
_MAX_LISTED = 20


class Holder(NamedTuple):
    """A named holder of a gate, as :meth:`Gate.holders` reports it."""

    #: The name given to :meth:`Gate.enter`, :meth:`Gate.acquire`,
    #: :meth:`Gate.start_soon` or :meth:`GateGuard.clone`.
    name: str
    #: Seconds since the holder entered.
    held_for: float


class _Record:
    """What a gate keeps of a named holder while it holds."""

    __slots__ = ("name", "since")

    name: str | None
    since: float


class _CancellableRecord(_Record):
    """A record of a guard entered with ``cancellable=True``."""

    __slots__ = ("cancelled_caught", "loop", "scope", "task")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.since = monotonic()
        # Set while the guard's block runs, so that close(grace=) can end it.
        self.scope: CancelScope | None = None
        self.loop: LoopRef | None = None
        # The id of the task running the block, to catch that task closing the gate.
        self.task: int | None = None
        self.cancelled_caught = False

    def cancel(self) -> None:
        scope, loop = self.scope, self.loop
        if scope is not None and loop is not None:
            loop.call(scope.cancel)


# Bypassing __init__ is the cheapest way to build a _Record; set both slots.
_new_record = cast("Callable[[type[_Record]], _Record]", object.__new__)


def _describe(name: str | None) -> str:
    return "the gate" if name is None else f"gate {name!r}"


def _holders(records: Iterable[_Record]) -> list[Holder]:
    now = monotonic()
    return [Holder(r.name, now - r.since) for r in records if r.name is not None]


def _warn_slow_close(
    gate_name: str | None, waited: float, count: int, records: Iterable[_Record], closer: str | None
) -> None:
    named = _holders(records)
    listed = ", ".join(f"{h.name!r} ({h.held_for:.3f}s)" for h in named[:_MAX_LISTED])
    if len(named) > _MAX_LISTED:
        listed += f", and {len(named) - _MAX_LISTED} more"
    # An unnamed hold in the closing task itself cannot be seen, only suspected.
    _logger.warning(
        "closing %s is taking longer than expected: waited %.3fs, %d still held%s; "
        "close() is awaited in task %r, which waits forever if it holds the gate itself",
        _describe(gate_name),
        waited,
        count,
        f"; named holders, oldest first: {listed}" if named else "; none of them named",
        closer,
    )


def _log_late_release(gate_name: str | None, record: _Record, closing_since: float) -> None:
    now = monotonic()
    _logger.info(
        "%r kept %s from closing for %.3fs (held for %.3fs)",
        record.name,
        _describe(gate_name),
        now - closing_since,
        now - record.since,
    )


def _log_close_completed(gate_name: str | None, took: float) -> None:
    _logger.info("closing %s completed after %.3fs", _describe(gate_name), took)
