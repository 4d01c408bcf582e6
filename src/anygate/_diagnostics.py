"""What a gate tells about itself: holder records, statistics and log records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import NamedTuple

from anyio import CancelScope
from typing_extensions import final

from ._wakeup import LoopRef

_logger = logging.getLogger("anygate")

#: How many holders a slow-close warning lists at the most.
_MAX_LISTED = 20


class Holder(NamedTuple):
    """A named holder of a gate, as :meth:`Gate.holders` reports it."""

    #: The name given to :meth:`Gate.enter`, :meth:`Gate.acquire`,
    #: :meth:`Gate.start_soon`, :meth:`Gate.start` or :meth:`GateGuard.clone`;
    #: for a child gate, ``"gate 'its name'"``.
    name: str
    #: Seconds since the holder entered.
    held_for: float


@final
@dataclass(frozen=True)
class GateStatistics:
    """A snapshot of a gate, as :meth:`Gate.statistics` returns it."""

    #: Holds in progress, as :attr:`Gate.count`.
    count: int
    #: Whether the gate is closed, as :attr:`Gate.closed`.
    closed: bool
    #: The gate's limit, or ``None``.
    limit: int | None
    #: Tasks waiting in :meth:`Gate.acquire` for room.
    tasks_waiting: int
    #: The named holders, oldest first, as :meth:`Gate.holders` lists them.
    holders: tuple[Holder, ...]
    #: Open child gates (see the ``parent`` argument of :class:`Gate`).
    children: int
    #: Entries refused since the gate was created, by a closed gate or one at
    #: its limit, counting tasks in :meth:`Gate.acquire` that a close woke.
    refused: int
    #: Seconds from the close to the drain of the last close that drained.
    last_close_duration: float | None


class _Record:
    """What a gate keeps of a named holder while it holds."""

    __slots__ = ("name", "since")

    name: str | None
    since: float


class _ChildRecord(_Record):
    """The hold of a child gate on its parent, which can list the child's holders."""

    __slots__ = ("holders",)

    def __init__(self, name: str, holders: Callable[[], list[Holder]]) -> None:
        self.name = name
        self.since = monotonic()
        self.holders = holders


class _CancellableRecord(_Record):
    """A record of a guard entered with ``cancellable=True``."""

    __slots__ = ("cancelled_caught", "loop", "scope", "task")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.since = monotonic()
        # Set while the guard's block runs, so that a close can end it.
        self.scope: CancelScope | None = None
        self.loop: LoopRef | None = None
        # The task running the block: to catch it closing the gate, or leaving
        # the block in another task.
        self.task: int | None = None
        self.cancelled_caught = False


def _describe(name: str | None) -> str:
    return "the gate" if name is None else f"gate {name!r}"


def _holders(records: Iterable[_Record]) -> list[Holder]:
    now = monotonic()
    return [Holder(r.name, now - r.since) for r in records if r.name is not None]


def _listing(records: Iterable[_Record]) -> str:
    now = monotonic()
    named = [r for r in records if r.name is not None]
    parts = []
    for record in named[:_MAX_LISTED]:
        part = f"{record.name!r} ({now - record.since:.3f}s)"
        if isinstance(record, _ChildRecord):
            inner = record.holders()
            listed = ", ".join(f"{h.name!r} ({h.held_for:.3f}s)" for h in inner[:_MAX_LISTED])
            part += f" held by {listed}" if inner else " held by unnamed holders"
        parts.append(part)
    if len(named) > _MAX_LISTED:
        parts.append(f"and {len(named) - _MAX_LISTED} more")
    return ", ".join(parts)


def _warn_slow_close(
    gate_name: str | None,
    waited: float,
    count: int,
    records: tuple[_Record, ...],
    closer: str | None,
    closer_id: int,
) -> None:
    # Children and cancellable blocks know who holds them; any other hold might
    # be the closing task's own.
    known = sum(
        1
        for r in records
        if isinstance(r, _ChildRecord)
        or (isinstance(r, _CancellableRecord) and r.task not in (None, closer_id))
    )
    closer_may_hold = count > known
    listed = _listing(records)
    _logger.warning(
        "closing %s is taking longer than expected: waited %.3fs, %d still held%s%s",
        _describe(gate_name),
        waited,
        count,
        f"; named holders, oldest first: {listed}" if listed else "; none of them named",
        f"; close() is awaited in task {closer!r}, which waits forever if it holds the gate itself"
        if closer_may_hold
        else "",
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
