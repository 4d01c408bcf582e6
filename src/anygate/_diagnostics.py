"""What a gate tells about itself: statistics and log records."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from time import monotonic

from typing_extensions import final

from ._records import CancellableRecord, ChildRecord, Holder, Record, holder_of, label, listed

_logger = logging.getLogger("anygate")

#: How many holders a slow-close warning lists at the most.
_MAX_LISTED = 20


@final
@dataclass(frozen=True)
class GateStatistics:
    """A snapshot of a gate, as :meth:`Gate.statistics` returns it.

    One consistent snapshot: :attr:`count` is never below the number of
    :attr:`holders`.
    """

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
    #: Child gates holding this gate (see the ``parent`` argument of
    #: :class:`Gate`): the open ones, and the closed ones still draining.
    children: int
    #: Entries refused since the gate was created, by a closed gate or one at
    #: its limit, counting tasks in :meth:`Gate.acquire` that a close woke.
    refused: int
    #: Seconds from the close to the drain of the last close that drained.
    last_close_duration: float | None


#: The facts every record of the ``anygate`` logger carries as attributes (set
#: through ``extra``), beside its text: the same five on every record, ``None``
#: where one does not apply, so that a JSON formatter writes one schema.
#:
#: * ``anygate_event``: ``"slow_close"``, ``"late_release"``,
#:   ``"close_completed"`` or ``"leaked_guard"``;
#: * ``anygate_gate``: the gate's name (``None`` for an unnamed gate);
#: * ``anygate_seconds``: the seconds the close has waited (slow_close), the
#:   holder kept the close waiting (late_release), the close took
#:   (close_completed), or the leaked guard was held (leaked_guard, if named);
#: * ``anygate_count``: the holds on the gate then (after the release, for
#:   late_release and leaked_guard);
#: * ``anygate_holders``: the named holders concerned (in debug mode, every
#:   holder), oldest first, as plain dicts ``{"name": str, "held_for": float,
#:   "site": str | None, "taken_by": str | None}``, the fields of
#:   :class:`~anygate.Holder`; a child gate's also has ``"held_by"``, its own
#:   holders listed the same way. At most 20.
FACTS = ("anygate_event", "anygate_gate", "anygate_seconds", "anygate_count", "anygate_holders")


def _facts(
    event: str,
    gate_name: str | None,
    seconds: float | None,
    count: int | None,
    holders: list[dict[str, object]],
) -> dict[str, object]:
    return dict(zip(FACTS, (event, gate_name, seconds, count, holders), strict=True))


def _holder_facts(records: Iterable[Record], now: float) -> list[dict[str, object]]:
    facts: list[dict[str, object]] = []
    for record in records:
        if not listed(record):
            continue
        if len(facts) == _MAX_LISTED:
            break
        fact: dict[str, object] = holder_of(record, now)._asdict()
        if isinstance(record, ChildRecord):
            fact["held_by"] = [h._asdict() for h in record.holders()[:_MAX_LISTED]]
        facts.append(fact)
    return facts


def describe(name: str | None) -> str:
    return "the gate" if name is None else f"gate {name!r}"


def _holder_text(name: str, held_for: float, site: str | None, taken_by: str | None) -> str:
    if site is None:
        return f"{name} ({held_for:.3f}s)"
    # Debug mode: with gate: at app/tenant.py:88 in get_page (task 'request 17', 3.152s)
    return f"{name} at {site} ({taken_by}, {held_for:.3f}s)"


def _listing(records: Iterable[Record]) -> str:
    now = monotonic()
    shown = [r for r in records if listed(r)]
    parts = []
    for record in shown[:_MAX_LISTED]:
        taken = record.taken
        part = _holder_text(
            label(record),
            now - record.since,
            None if taken is None else taken.site,
            None if taken is None else taken.taken_by,
        )
        if isinstance(record, ChildRecord):
            inner = record.holders()
            within = ", ".join(
                _holder_text(repr(h.name), h.held_for, h.site, h.taken_by)
                for h in inner[:_MAX_LISTED]
            )
            part += f" held by {within}" if inner else " held by unnamed holders"
        parts.append(part)
    if len(shown) > _MAX_LISTED:
        parts.append(f"and {len(shown) - _MAX_LISTED} more")
    return ", ".join(parts)


def warn_slow_close(
    gate_name: str | None,
    waited: float,
    count: int,
    records: tuple[Record, ...],
    closer: str | None,
    closer_id: int,
) -> None:
    # Children and cancellable blocks know who holds them; any other hold might
    # be the closing task's own.
    known = sum(
        1
        for r in records
        if isinstance(r, ChildRecord)
        or (isinstance(r, CancellableRecord) and r.task not in (None, closer_id))
    )
    closer_may_hold = count > known
    listing = _listing(records)
    # In debug mode every hold is recorded, named or not.
    kind = "holders" if any(r.taken is not None for r in records) else "named holders"
    facts = _facts("slow_close", gate_name, waited, count, _holder_facts(records, monotonic()))
    _logger.warning(
        "closing %s is taking longer than expected: waited %.3fs, %d still held%s%s",
        describe(gate_name),
        waited,
        count,
        f"; {kind}, oldest first: {listing}" if listing else "; none of them named",
        f"; close() is awaited in task {closer!r}, which waits forever if it holds the gate itself"
        if closer_may_hold
        else "",
        extra=facts,
    )


def log_late_release(
    gate_name: str | None, record: Record, closing_since: float, count: int
) -> None:
    now = monotonic()
    kept = now - closing_since
    _logger.info(
        "%s kept %s from closing for %.3fs (held for %.3fs)%s",
        label(record),
        describe(gate_name),
        kept,
        now - record.since,
        "" if record.taken is None else f", taken {record.taken}",
        extra=_facts("late_release", gate_name, kept, count, _holder_facts([record], now)),
    )


def log_close_completed(gate_name: str | None, took: float) -> None:
    _logger.info(
        "closing %s completed after %.3fs",
        describe(gate_name),
        took,
        extra=_facts("close_completed", gate_name, took, 0, []),
    )


def log_leaked_guard(
    message: str, gate_name: str | None, record: Record | None, count: int
) -> None:
    """The record of a guard released by its finalizer, beside its ResourceWarning."""
    if record is not None and not hasattr(record, "since"):
        record = None  # interrupted as it was counted: never admitted, never held
    now = monotonic()
    held = None if record is None else now - record.since
    holders = [] if record is None else _holder_facts([record], now)
    _logger.warning(message, extra=_facts("leaked_guard", gate_name, held, count, holders))
