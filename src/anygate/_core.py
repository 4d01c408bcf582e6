"""The plumbing of a gate: its counter and the rule that keeps it, settling
after releases, shutting, and the line of a bounded gate.

:class:`~anygate.Gate` adds the public API; nothing here is called by users.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Callable, Sequence
from time import monotonic

import anyio
import anyio.lowlevel

from ._admission import Admission, Waiter, WaiterState
from ._closing import Closing, wait_drained
from ._diagnostics import describe, log_late_release, warn_slow_close
from ._exceptions import GateClosed
from ._guards import CancellableGuard, GateGuard, child_guard, new_guard
from ._lock import GateLock
from ._records import CancellableRecord, ChildRecord, Holder, Record, listed
from ._util import check_limit, require_loop
from ._wakeup import Wakeup, in_signal_handler


class GateCore:
    """A gate's state and the operations on it, each rule written once.

    Every field here has one owner: the counter (``_holds`` with
    ``_closed_or_bounded``) is the gate's, changed only by the operations below
    and their marked hot copies; a close's state is its ``Closing``'s; the line
    is the ``Admission``'s; the lock and what it is owed are the ``GateLock``'s.
    """

    # The counter, and its rule, written here once (tokio-util's TaskTracker
    # keeps its state in one word; this is that word, spread over two fields):
    #
    # * ``_holds`` has one item per hold: list.append and list.pop are atomic
    #   (under the GIL, and per list on free-threaded builds), so len() is an
    #   exact, lock-free count for every thread.
    # * ``_closed_or_bounded`` says a hold needs more than the count: the gate
    #   is closed, or bounded. An open unbounded gate pays one test per entry
    #   and release, and takes no lock.
    # * Entry (GateCore._count): append, THEN read ``_closed_or_bounded``.
    #   Close (GateCore._shut_one): set ``_closing``, then ``_closed_or_bounded``,
    #   THEN read the count (Dekker's pairing; _count_after_store is the barrier
    #   on free-threaded builds). So either the entry sees the close and gives
    #   its hold back, or the close sees the hold and waits for it.
    # * Release (GateGuard._release, or GateCore._drop for a hold no guard
    #   owns): pop, THEN read ``_closed_or_bounded``, and settle if set.
    #
    # Copies inlined for speed are marked "HOT COPY of" the operation they copy,
    # and tests/test_enter.py::TestEveryWayToHold runs the rule over each.
    __slots__ = (
        "_admission",
        "_children",
        "_closed_or_bounded",
        "_closing",
        "_closing_waiters",
        "_fast_acquire",
        "_holds",
        "_last_close",
        "_lock",
        "_name",
        "_parent",
        "_parent_hold",
        "_records",
        "_refused",
        "_warn_after",
    )

    _name: str | None
    _holds: list[None]
    #: The close in progress or done, or None while open. Set before _closed_or_bounded.
    _closing: Closing | None
    _admission: Admission | None
    _closed_or_bounded: bool
    _lock: GateLock
    #: Named and cancellable holds, oldest first (see records.Record).
    _records: dict[Record, None]
    _warn_after: float | None
    _fast_acquire: bool
    #: Tasks in wait_closing().
    _closing_waiters: list[Wakeup]
    #: Children holding this gate, open or still draining.
    _children: dict[GateCore, None]
    _refused: int
    _last_close: float | None
    _parent: GateCore | None
    #: The hold on the parent while open; a close takes it (Closing.parent_hold).
    _parent_hold: GateGuard | None

    def __init__(
        self, name: str | None, limit: int | None, warn_after: float | None, fast_acquire: bool
    ) -> None:
        self._name = name
        self._holds = []
        self._closing = None
        self._admission = None if limit is None else Admission(limit)
        self._closed_or_bounded = self._admission is not None
        self._lock = GateLock(self._settle)
        self._records = {}
        self._warn_after = warn_after
        self._fast_acquire = fast_acquire
        self._closing_waiters = []
        self._children = {}
        self._refused = 0
        self._last_close = None
        self._parent = None
        self._parent_hold = None

    def _count(self, guard: GateGuard) -> None:
        """Count a hold for ``guard``, or give it back and raise: the rule of an entry.

        A KeyboardInterrupt that CPython delivers as the append returns leaks
        the hold: the one window, documented in :meth:`enter`.
        """
        holds = self._holds
        holds.append(None)
        guard._holds = holds
        if self._closed_or_bounded:
            error = self._refusal()
            if error is not None:
                guard._holds = None
                self._refuse()
                raise error
        guard._held()

    def _refusal(self) -> Exception | None:
        """Why a hold just counted may not stay, or ``None``."""
        if self._closing is not None:
            return self._closed_error()
        admission = self._admission
        if admission is not None and not admission.has_room(len(self._holds)):
            return anyio.WouldBlock(f"{self._describe()} is at its limit of {admission.limit}")
        return None

    def _refuse(self) -> None:
        """Give back the hold of a refused entry, which no guard owns."""
        # No lock: an entry may be refused in a signal handler that interrupted
        # this gate's own locked region. Under the GIL, from Python 3.11, nothing
        # can run between the read and the write; on 3.10 and on free-threaded
        # builds, concurrent refusals in threads may be undercounted.
        self._refused += 1
        closing = self._closing
        if closing is not None and closing.drained():
            # The count was zero before this entry: its drop settles nothing.
            self._holds.pop()
        else:
            self._drop()

    def _drop(self) -> None:
        """Drop a hold that no guard owns, then settle: the rule of a release."""
        try:
            self._holds.pop()
            if self._closed_or_bounded:
                self._settle()
        except BaseException:
            if self._closed_or_bounded:
                self._settle()
            raise

    def _settle(self, soon: bool = False) -> None:
        """Act on a release of a slow gate: drain a close, or admit waiters; then
        settle each ancestor whose hold a drain dropped, without recursion.

        Never blocks (see :class:`~anygate._lock.GateLock`), and is idempotent:
        settling twice does no harm, and a drained close is woken again. That
        makes the **interrupt policy** of every release possible: an exception
        landing after a hold is dropped (a KeyboardInterrupt, which CPython
        delivers after any call) settles again before it goes on.
        ``soon``: called from a finalizer, so wake nothing directly.
        """
        admission = self._admission
        if admission is None or not admission.line:
            if self._closing is None:
                # Open, and nobody in line: nothing to do (see _settle_one).
                return
            if _count_after_store(self._holds):
                # Closing, and still held: each hold left settles as it is
                # dropped (pop, then read the flag), and the last one drains.
                # _settle_locked makes the same test; this one skips the lock.
                return
        _walk([self], lambda gate: gate._settle_one(soon))

    def _settle_one(self, soon: bool) -> list[GateCore]:
        """Settle this gate; return the parent whose hold a drain dropped."""
        admission = self._admission
        if self._closing is None and (admission is None or not admission.line):
            # Open, and nobody in line: nothing to do. A waiter joins the line,
            # then settles itself, so one of the two sees the other.
            return []
        lock = self._lock
        lock.owed = True
        up: list[GateCore] = []
        while lock.owed:
            if lock.held_here():
                return up  # a finalizer or handler inside the region: it settles
            try:
                if not lock.try_enter():
                    return up  # the lock's holder settles as it lets go
                try:
                    lock.owed = False
                    wakeups, parent = self._settle_locked()
                except BaseException:
                    lock.owed = True
                    raise
                lock.leave()
            except BaseException:
                # Interrupted anywhere between the take and the leave (even as
                # either call returns): never keep the lock. The walk re-settles.
                lock.leave_if_taken()
                raise
            if wakeups and not soon and self._closing is not None:
                # A drain, once a close: worth the look for a signal handler
                # (one that made the last release), where waking directly from
                # inside the loop's own Event.wait would be lost.
                soon = in_signal_handler()
            for wakeup in wakeups:
                wakeup.wake(soon)
            if parent is not None:
                up = [parent]
            lock.run_deferred()
        return up

    def _settle_locked(self) -> tuple[list[Wakeup], GateCore | None]:
        """Under the lock: drain a close whose count is zero, or admit waiters."""
        closing = self._closing
        if closing is not None:
            if not closing.drained():
                if _count_after_store(self._holds):
                    return [], None
                closing.mark_drained()
                self._last_close = closing.duration()
            # Drained (now or before): its waiters are woken, again if need be,
            # and its hold on the parent dropped, exactly once, here.
            hold = closing.drop_parent_hold()
            parent = None
            if hold is not None and self._parent is not None:
                parent = self._parent
                parent._children.pop(self, None)
            return closing.waiters.copy(), parent
        admission = self._admission
        if admission is not None and admission.line:
            return [waiter.wakeup for waiter in admission.admit(self._holds)], None
        return [], None

    def _set_limit(self, limit: int) -> None:
        """Change the limit of a bounded gate, then admit the waiters it makes room for."""
        admission = self._admission
        if admission is None:
            raise TypeError(
                f"{self._describe()} has no limit, and cannot be given one: "
                "make it with Gate(limit=...) to change its limit later"
            )
        check_limit(limit, none=False)
        lock = self._lock
        with lock:
            # Under the lock, as the line's changes are; the settle it owes
            # runs as the lock is let go, and admits the waiters that now fit.
            admission.limit = limit
            lock.owed = True

    async def _acquire(self, name: str | None, cls: type[GateGuard]) -> GateGuard:
        """Take a hold, or a place in line, then checkpoint: first come, first served."""
        if cls is CancellableGuard:
            require_loop("acquire(cancellable=True)")
        guard = self._new_guard(cls, name)
        admission = self._admission
        # Straight to the line when there is no room, so as not to count a refusal.
        if admission is None or admission.has_room(len(self._holds) + 1):
            try:
                self._count(guard)
            except anyio.WouldBlock:
                pass
            else:
                if not self._fast_acquire:
                    await checkpoint_holding(guard)
                return guard
        return await self._wait_in_line(guard)

    async def _wait_in_line(self, guard: GateGuard) -> GateGuard:
        admission = self._admission
        assert admission is not None
        waiter = Waiter()
        holds = self._holds
        with self._lock:
            error = self._closed_error() if self._closing is not None else None
            if error is None:
                # Count first, as an entry does, so that no entry from another
                # thread fits into the room between a look and the count.
                holds.append(None)
                if admission.has_room(len(holds)):
                    waiter.state = WaiterState.ADMITTED
                else:
                    admission.join(waiter)
                    holds.pop()
                    self._lock.owed = True  # that pop's settle, once unlocked
        if error is not None:
            raise error
        if waiter.state is not WaiterState.ADMITTED:
            try:
                await waiter.wakeup.event.wait()
            except BaseException:
                with self._lock:
                    admission.leave(waiter)
                if waiter.admitted():
                    self._drop()  # admitted in the same tick: hand the place on
                raise
            if waiter.state is WaiterState.REFUSED:
                raise self._closed_error()
            guard._holds = holds
            guard._held()
        else:
            guard._holds = holds
            guard._held()
            if not self._fast_acquire:
                await checkpoint_holding(guard)
        return guard

    def _hold_for_child(self, child: GateCore, holders: Callable[[], list[Holder]]) -> None:
        """Hold this gate for ``child``, a gate being created or reopened under it.

        Under this gate's lock, so that a close sees either the child, with its
        hold, or the gate shut. A reopening child holds its own lock: locks nest
        from child to parent only.
        """
        name = f"gate {child._name!r}" if child._name is not None else "an unnamed child gate"
        guard = child_guard(self, self._new_child_record(name, holders))
        with self._lock:
            error = self._refusal()
            if error is None:
                self._holds.append(None)
                guard._holds = self._holds
                guard._held()
                child._parent_hold = guard
                self._children[child] = None
        if error is not None:
            raise error

    def _new_guard(self, cls: type[GateGuard], name: str | None) -> GateGuard:
        """A guard on this gate, not yet holding, for the entries off the hot
        paths (clones, waits, cancellable guards); debug mode records its site."""
        return new_guard(self, cls, name)

    def _new_child_record(self, name: str, holders: Callable[[], list[Holder]]) -> ChildRecord:
        """The record of a child gate's hold on this gate; debug mode records its site."""
        return ChildRecord(name, holders)

    def _descendant_closes(self) -> Sequence[tuple[GateCore, Closing]]:
        """The closes of the descendants still draining, which this gate's close made."""
        found = []
        gates = list(self._children.copy())
        while gates:
            gate = gates.pop()
            closing = gate._closing
            if closing is not None and not closing.drained():
                found.append((gate, closing))
            gates += gate._children.copy()
        return found

    def _shut(
        self, grace: float | None, deadline: float | None, by: GateCore | None = None
    ) -> None:
        """Shut this gate and its descendants, without recursion; ``by``: the
        gate whose close this is, if not this one."""
        soon = in_signal_handler()
        origin = self if by is None else by
        _walk([self], lambda gate: gate._shut_one(grace, deadline, soon, origin))

    def _shut_one(
        self, grace: float | None, deadline: float | None, soon: bool, by: GateCore
    ) -> list[GateCore]:
        """Shut this gate, or tighten its close; return the children to shut.

        ``soon``: called from a signal handler, so wake tasks only through their
        loops' thread-safe scheduling, even in this thread.

        A signal handler or finalizer may call this inside one of this gate's
        locked regions, in the thread holding the lock: then the shut is done as
        the region is left, before that thread runs anything else.
        """
        lock = self._lock
        if lock.held_here():
            lock.defer(lambda: self._shut(grace, deadline, by))
            return []
        refused: list[Waiter] = []
        wakeups: list[Wakeup] = []
        records: tuple[Record, ...] = ()
        with lock:
            closing = self._closing
            if closing is None:
                closing = Closing(self._parent_hold, by)
                self._parent_hold = None
                self._closing = closing
                # After _closing: an entry that sees the flag must see the close.
                self._closed_or_bounded = True
                if self._admission is not None:
                    refused = self._admission.refuse_all()
                    self._refused += len(refused)
                wakeups, self._closing_waiters = self._closing_waiters, []
            tightened = closing.tighten(self._describe(), grace, deadline)
            if tightened:
                records = tuple(self._records.copy())
                # Tasks watching the blocks wake for the new deadline.
                wakeups += closing.watchers
            empty = not _count_after_store(self._holds) and not closing.drained()
        # The children this shut still has to reach: open, or with a later
        # deadline. A closed gate's descendants are closed, so a tree closed
        # again is not walked again; and a step interrupted and taken again
        # finds the same children.
        children = [
            child
            for child in self._children.copy()
            if child._closing is None
            or (deadline is not None and not child._closing.deadline_is_by(deadline))
        ]
        if tightened:
            closing.note_loop()
            # Before the wakeups: a task awaiting the drain then finds the blocks
            # that the deadline cancelled already cancelled, from any thread.
            closing.give_deadline_everywhere(records, soon)
        for waiter in refused:
            waiter.wakeup.wake(soon)
        for wakeup in wakeups:
            wakeup.wake(soon)
        if empty:
            self._settle(soon)
        return children

    async def _wait_drained(self, closing: Closing | None) -> None:
        if closing is None:
            # Shut from inside a locked region: done by the time this runs.
            closing = self._closing
            assert closing is not None
        if closing.drained():
            await anyio.lowlevel.checkpoint()
            return
        self._check_not_held_by_closer()
        await wait_drained(self, closing)

    def _warn(self, closing: Closing) -> None:
        with self._lock:
            first = closing.warned_at is None
            if first:
                closing.warned_at = monotonic()
        if not first:
            return
        task = anyio.get_current_task()
        warn_slow_close(
            self._name,
            monotonic() - closing.started,
            len(self._holds),
            tuple(self._records.copy()),
            task.name,
            task.id,
        )

    def _check_not_held_by_closer(self) -> None:
        # Only blocks of cancellable guards know their task; other holds are
        # named, if at all, by the slow-close warning.
        if not self._records:
            return
        task = anyio.get_current_task().id
        for record in tuple(self._records.copy()):
            if isinstance(record, CancellableRecord) and record.task == task:
                holder = "an unnamed guard" if record.name is None else repr(record.name)
                raise RuntimeError(
                    f"close() of {self._describe()} awaited inside the block of "
                    f"{holder} that holds it: it would wait for itself forever"
                )

    def _log_late_release(self, record: Record) -> None:
        """A named holder (in debug mode, any holder), forgotten already, is
        releasing a closed gate: log it if the close was slow enough to warn."""
        closing = self._closing
        if closing is not None and closing.warned_at is not None and listed(record):
            # Called as the hold is about to drop: the count it leaves.
            log_late_release(self._name, record, closing.started, len(self._holds) - 1)

    def _describe(self) -> str:
        return describe(self._name)

    def _closed_error(self) -> GateClosed:
        """The refusal of a closed gate, naming the ancestor whose close it was."""
        closing = self._closing
        by = None if closing is None else closing.by
        message = f"{self._describe()} is closed"
        if isinstance(by, GateCore) and by is not self:
            kin = "parent" if by is self._parent else "ancestor"
            who = f"{kin} {by._name!r}" if by._name is not None else f"unnamed {kin} gate"
            state = "is closing" if by._closing is not None else "closed it"
            message += f": its {who} {state}"
        error = GateClosed(message)
        error.gate = self  # type: ignore[assignment]
        error.closed_by = by  # type: ignore[assignment]
        return error


async def checkpoint_holding(guard: GateGuard) -> None:
    """The checkpoint after a hold is taken; cancelled there, the hold is released."""
    try:
        await anyio.lowlevel.checkpoint()
    except BaseException:
        guard.release()
        raise


def _walk(todo: list[GateCore], step: Callable[[GateCore], list[GateCore]]) -> None:
    """Apply ``step`` to the gates in ``todo`` and to those each step returns:
    a walk down or up a tree of any depth, without recursion.

    A step is idempotent, and the gate it works on leaves ``todo`` in the same
    store that puts the gates it returned there. So an interrupt at any call
    (a KeyboardInterrupt) loses nothing: the walk finishes, then it goes on.
    """
    try:
        while todo:
            todo[-1:] = step(todo[-1])
    except BaseException:
        while todo:
            todo[-1:] = step(todo[-1])
        raise


if sysconfig.get_config_var("Py_GIL_DISABLED"):

    def _count_after_store(holds: list[None]) -> int:
        """The count, read after a full barrier that follows the caller's stores.

        An entry counts itself, then reads the closed flag; a close sets the
        flag, then reads the count. Each side needs its store ordered before
        its load (Dekker). The entry's append ends by unlocking the list, a
        sequentially consistent compare-and-swap; here, copying the list locks
        it, another one. Both are full barriers on x86-64 and on AArch64 with
        its LSE atomics. Under the GIL the GIL's hand-off is one, so the GIL
        build reads the length directly.
        """
        return len(holds.copy())

else:

    def _count_after_store(holds: list[None]) -> int:
        return len(holds)
