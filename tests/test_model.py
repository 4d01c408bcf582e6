"""A Gate held against a plain model, under random sequences of operations.

Hypothesis drives one gate per example on one backend, through a blocking
portal: entries (``enter``, ``try_enter``, ``with gate``, ``acquire``), releases
from the event loop's thread and from threads anyio never saw, clones, closes
(awaited in tasks, ``close_nowait``, and awaitables of ``close`` kept to be
awaited later, even after a reopen), cancelled closers, reopens, tasks in
``wait_closing``, waiters in ``acquire`` on a limited gate, cancellable blocks
entered by ``enter``, ``acquire`` and ``clone``, and ticks in which waiters are
cancelled, guards released and the gate closed and reopened with nothing run
in between.

After every step the event loop is let run until every task is blocked, and
the gate is checked against the model: its count, state, statistics and
holders, which tasks have returned and how, the deadline each cancellable
block runs under, and what the ``anygate`` logger said.

Real time is in play only through a close's grace, so the model knows three:
``0`` (cancellable blocks are cancelled at once), ``None`` (never), and
:data:`LATER`, which never runs out within an example. The slow-close warning
comes after ``warn_after=0`` (at once, once the grace is over) or never.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from itertools import count, pairwise
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from anygate import Gate, GateClosed, GateGuard
from helpers import BACKENDS, in_thread

TIMEOUT = 5

#: A grace that does not run out within an example.
LATER = 3600.0
GRACES = st.sampled_from([None, 0, LATER])
#: Where a release runs: in the event loop's thread, or in a thread of its own
#: that anyio never saw.
WHERE = st.sampled_from(["loop", "thread"])

# A close's deadline as the model knows it, ordered so that the earliest wins.
PASSED, PENDING, NEVER = 0, 1, 2

# What became of a task in acquire(): whichever came first of these.
CANCELLED, ADMITTED, REFUSED = "cancelled", "admitted", "refused"


def call(portal: BlockingPortal, func: Callable[[], Any]) -> Any:
    """Run ``func`` in the portal's event loop and return its result.

    Bounded, so that a hang fails the example and Hypothesis can shrink it.
    """
    return portal.start_task_soon(func).result(timeout=TIMEOUT)


class Task:
    """A coroutine run in the portal's event loop, cancellable from the test."""

    def __init__(self, portal: BlockingPortal, func: Callable[[], Awaitable[Any]]) -> None:
        self.portal = portal
        self.scope: anyio.CancelScope | None = None
        self.result: Any = None
        self.error: BaseException | None = None

        async def run() -> None:
            with anyio.CancelScope() as self.scope:
                try:
                    self.result = await func()
                except Exception as exc:
                    self.error = exc

        self.future: Future[None] = portal.start_task_soon(run)

    @property
    def done(self) -> bool:
        return self.future.done()

    @property
    def cancelled(self) -> bool:
        return self.scope is not None and self.scope.cancelled_caught

    def cancel_here(self) -> None:
        """Cancel the task; only in the event loop's thread."""
        scope = self.scope
        assert scope is not None, "the task has not started"
        scope.cancel()

    def cancel(self) -> None:
        call(self.portal, self.cancel_here)

    def assert_returned(self) -> None:
        assert self.done
        assert self.error is None, self.error
        assert not self.cancelled

    def assert_cancelled(self) -> None:
        assert self.done
        assert self.cancelled
        assert self.error is None, self.error
        assert self.result is None


class ModelBlock:
    """A task holding a cancellable guard in a block until told to stop.

    Poked, it reports the deadline it runs under, which is how the model sees
    the grace of a close that has not run out.
    """

    def __init__(
        self,
        portal: BlockingPortal,
        name: str,
        enter: Callable[[], AbstractAsyncContextManager[GateGuard]],
    ) -> None:
        self.name = name
        self.guard: GateGuard | None = None
        self.deadline: float | None = None
        self.stopping = False
        self.poked: anyio.Event | None = None

        async def hold() -> None:
            self.poked = poked = anyio.Event()
            async with enter() as guard:
                self.guard = guard
                while not self.stopping:
                    await poked.wait()
                    self.poked = poked = anyio.Event()
                    self.deadline = anyio.current_effective_deadline()

        self.task = Task(portal, hold)

    def poke(self) -> None:
        """Have the block report its deadline; in the event loop's thread."""
        assert self.poked is not None
        self.deadline = None
        self.poked.set()

    def stop(self) -> None:
        """Have the block end; in the event loop's thread."""
        self.stopping = True
        if self.poked is not None:
            self.poked.set()

    def assert_cancelled_by_the_gate(self) -> None:
        assert self.task.done
        assert self.task.error is None, self.task.error
        assert self.guard is not None
        assert self.guard.cancelled_caught
        assert self.guard.released


@dataclass(eq=False)
class Waiter:
    """A task in ``gate.acquire()``: a plain one, whose result is the guard, or
    a cancellable block."""

    name: str
    task: Task
    block: ModelBlock | None = None
    #: Whichever came first: cancelled, admitted or refused; None while waiting.
    fate: str | None = None
    #: Whether the gate counted a hold for it (admitted, even if cancelled first).
    admitted: bool = False


@dataclass(eq=False)
class Epoch:
    """One close, from the moment the gate shut until reopen()."""

    deadline: int = NEVER
    warned: bool = False
    drained: bool = False
    #: Tasks awaiting the drain.
    closers: list[Task] = field(default_factory=list)
    #: The grace ran out while tasks awaited the drain: they wake, and warn if
    #: the gate is still held when they run.
    grace_ended: bool = False


class Records(logging.Handler):
    """What the ``anygate`` logger said, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> Counter[tuple[str, str | None]]:
        """What was said since the last take, as the model puts it."""
        records, self.records = self.records, []
        said: Counter[tuple[str, str | None]] = Counter()
        for record in records:
            message = record.getMessage()
            if "kept gate 'model' from closing" in message:
                name = message.split(" kept ")[0]
                said["kept", name.strip("'")] += 1
            elif "closing gate 'model' completed after" in message:
                said["completed", None] += 1
            elif "closing gate 'model' is taking longer than expected" in message:
                said["warned", None] += 1
            else:
                said["unexpected", message] += 1
        return said


class GateModel(RuleBasedStateMachine):
    backend: tuple[str, dict[str, Any]] = ("asyncio", {})

    def __init__(self) -> None:
        super().__init__()
        self.logger = logging.getLogger("anygate")
        self.log_level = self.logger.level
        self.records = Records()
        self.logger.addHandler(self.records)
        self.logger.setLevel(logging.INFO)
        self.portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            *self.backend
        )
        self.portal = self.portal_cm.__enter__()
        self.gate = Gate("model")
        self.limit: int | None = None
        self.warn_after: float | None = None
        self.serial = count()
        # Every task started, to be waited for at the end.
        self.tasks: list[Task] = []
        # Awaitables from close() not yet awaited, with the close they belong to.
        self.pending: list[tuple[Coroutine[Any, Any, None], Epoch]] = []
        # The model.
        self.held: list[tuple[GateGuard, str | None]] = []
        self.released: list[GateGuard] = []
        self.epoch: Epoch | None = None
        self.waiters: list[Waiter] = []
        # Waiters admitted or refused, whose tasks have yet to be looked at.
        self.settling: list[Waiter] = []
        self.blocks: list[ModelBlock] = []
        # Blocks whose close's grace has run out: cancelled, about to let go.
        self.doomed: list[ModelBlock] = []
        # Tasks in wait_closing() on the open gate.
        self.closing_waiters: list[Task] = []
        # Tasks that must have returned by the end of the step.
        self.finishing: list[Task] = []
        self.said: Counter[tuple[str, str | None]] = Counter()

    # -- The model -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.epoch is not None

    @property
    def count(self) -> int:
        in_flight = sum(w.admitted for w in self.settling)
        return len(self.held) + len(self.blocks) + len(self.doomed) + in_flight

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.serial)}"

    def task(self, func: Callable[[], Awaitable[Any]]) -> Task:
        task = Task(self.portal, func)
        self.tasks.append(task)
        return task

    def block(
        self, prefix: str, enter: Callable[[str], AbstractAsyncContextManager[GateGuard]]
    ) -> ModelBlock:
        name = self.name(prefix)
        block = ModelBlock(self.portal, name, partial(enter, name))
        self.tasks.append(block.task)
        return block

    def call(self, func: Callable[[], Any]) -> Any:
        return call(self.portal, func)

    def settle(self) -> None:
        self.call(anyio.wait_all_tasks_blocked)

    def room(self) -> bool:
        return (self.limit is None or self.count < self.limit) and not self.waiters

    def expect(self, kind: str, name: str | None = None) -> None:
        self.said[kind, name] += 1

    def let_go(self, name: str | None) -> None:
        """A named holder released on a close that warned says it kept the gate."""
        if name is not None and self.epoch is not None and self.epoch.warned:
            self.expect("kept", name)

    def freed(self) -> None:
        """A hold was released: admit waiters in order, or drain the close."""
        if self.epoch is None:
            while self.waiters and (self.limit is None or self.count < self.limit):
                waiter = self.waiters.pop(0)
                waiter.admitted = True
                waiter.fate = waiter.fate or ADMITTED
                self.settling.append(waiter)
        self.drain()

    def drain(self) -> None:
        epoch = self.epoch
        if epoch is None or epoch.drained or self.count:
            return
        epoch.drained = True
        if epoch.closers and epoch.warned:
            self.expect("completed")
        self.finishing += epoch.closers
        epoch.closers = []

    def shut(self, grace: float | None) -> None:
        """What close_nowait(grace) does."""
        epoch = self.epoch
        if epoch is None:
            epoch = self.epoch = Epoch()
            for waiter in self.waiters:
                waiter.fate = waiter.fate or REFUSED
            self.settling += self.waiters
            self.waiters = []
            self.finishing += self.closing_waiters
            self.closing_waiters = []
        if grace is not None:
            if grace == 0 and epoch.deadline == PENDING and epoch.closers:
                epoch.grace_ended = True
            epoch.deadline = min(epoch.deadline, PASSED if grace == 0 else PENDING)
        if epoch.deadline == PASSED:
            self.doomed += self.blocks
            self.blocks = []
        self.drain()

    def await_drain(self, task: Task) -> None:
        """``task`` begins to await the drain of the current close."""
        epoch = self.epoch
        assert epoch is not None
        if epoch.drained:
            self.finishing.append(task)
            return
        epoch.closers.append(task)
        # The task warns at once if the gate is still held after the grace.
        if self.warn_after is not None and epoch.deadline != PENDING and not epoch.warned:
            epoch.warned = True
            self.expect("warned")

    def settle_model(self) -> None:
        """Let the loop run, then follow the tasks of admitted, refused,
        cancelled and doomed holders to their end, as the gate does."""
        epoch = self.epoch
        grace_ended = epoch is not None and epoch.grace_ended
        if epoch is not None:
            epoch.grace_ended = False
        while True:
            self.settle()
            settling = self.settling + [w for w in self.waiters if w.fate is not None]
            doomed = self.doomed
            if not settling and not doomed:
                break
            self.settling = []
            self.waiters = [w for w in self.waiters if w.fate is None]
            self.doomed = []
            for block in doomed:
                block.assert_cancelled_by_the_gate()
                self.let_go(block.name)
            for waiter in settling:
                self.follow(waiter)
            self.freed()
        # Tasks awaiting the drain, woken as the grace ran out, let the blocks
        # cancelled with them end first, then warn if the gate is still held.
        epoch = self.epoch
        warns = self.warn_after is not None and grace_ended
        if warns and epoch is not None and epoch.closers and not epoch.warned:
            epoch.warned = True
            self.expect("warned")

    def follow(self, waiter: Waiter) -> None:
        task = waiter.task
        if waiter.fate == CANCELLED:
            # It holds nothing: if admitted after its cancellation, in the same
            # tick, it handed its place on.
            task.assert_cancelled()
        elif waiter.fate == REFUSED:
            assert task.done
            assert isinstance(task.error, GateClosed), task.error
        elif waiter.block is None:
            task.assert_returned()
            assert isinstance(task.result, GateGuard)
            assert task.result.name == waiter.name
            self.held.append((task.result, waiter.name))
        elif self.epoch is not None and self.epoch.deadline == PASSED:
            # Entered after the grace ran out: cancelled at once.
            self.doomed.append(waiter.block)
        else:
            assert not task.done
            assert waiter.block.guard is not None
            self.blocks.append(waiter.block)

    # -- Rules -----------------------------------------------------------------

    @initialize(limit=st.sampled_from([None, 1, 2]), warn_after=st.sampled_from([0.0, None]))
    def start(self, limit: int | None, warn_after: float | None) -> None:
        # An unbounded gate takes the lock-free path; a bounded one, admission.
        self.limit = limit
        self.warn_after = warn_after
        self.gate = Gate("model", limit=limit, warn_after=warn_after)

    @rule(named=st.booleans(), soft=st.booleans())
    def enter(self, named: bool, soft: bool) -> None:
        name = self.name("h") if named else None
        refusal: type[Exception] | None = None
        if self.closed:
            refusal = GateClosed
        elif not self.room():
            refusal = anyio.WouldBlock
        if soft:
            guard = self.gate.try_enter(name)
            assert (guard is None) == (refusal is not None)
        elif refusal is not None:
            with pytest.raises(refusal):
                self.gate.enter(name)
            return
        else:
            guard = self.gate.enter(name)
        if guard is not None:
            assert guard.name == name
            self.held.append((guard, name))

    @rule(where=WHERE)
    def with_gate(self, where: str) -> None:
        if self.closed:
            with pytest.raises(GateClosed), self.gate:
                pass
        elif not self.room():
            with pytest.raises(anyio.WouldBlock), self.gate:
                pass
        else:

            def hold() -> None:
                with self.gate:
                    assert self.gate.count == self.count + 1

            if where == "loop":
                self.call(hold)
            else:
                in_thread(hold)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), where=WHERE)
    def release(self, data: st.DataObject, where: str) -> None:
        guard, name = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        if where == "loop":
            self.call(guard.release)
        else:
            in_thread(guard.release)
        assert guard.released
        self.released.append(guard)
        self.let_go(name)
        self.freed()

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def release_again(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.released)).release()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), named=st.booleans())
    def clone(self, data: st.DataObject, named: bool) -> None:
        guard, _ = data.draw(st.sampled_from(self.held))
        name = self.name("c") if named else None
        clone = guard.clone(name)
        assert clone.name == name
        self.held.append((clone, name))

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def clone_released(self, data: st.DataObject) -> None:
        with pytest.raises(RuntimeError, match="released"):
            data.draw(st.sampled_from(self.released)).clone()

    @rule(
        how=st.sampled_from(["await", "nowait", "nowait in a thread", "later"]),
        grace=GRACES,
        data=st.data(),
    )
    def close(self, how: str, grace: float | None, data: st.DataObject) -> None:
        if how == "await":
            closer = self.task(lambda: self.gate.close(grace=grace))
            self.shut(grace)
            self.await_drain(closer)
        else:
            if how == "later":
                # Shuts the gate here, in a thread without an event loop; awaited later.
                drained = self.gate.close(grace=grace)
            elif how == "nowait":
                self.call(partial(self.gate.close_nowait, grace=grace))
            else:
                in_thread(partial(self.gate.close_nowait, grace=grace))
            assert self.gate.closed
            self.shut(grace)
            if how == "later":
                assert self.epoch is not None
                self.pending.append((drained, self.epoch))
        if data.draw(st.booleans()) and self.held:
            # Work admitted before the close starts a cancellable part: it runs
            # under the deadline of the close, whichever grace set it.
            self.settle_model()
            guard, _ = data.draw(st.sampled_from(self.held))
            self.clone_block(guard)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def await_close(self, data: st.DataObject) -> None:
        drained, epoch = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        task = self.task(lambda: drained)
        if epoch is self.epoch:
            self.await_drain(task)
        else:
            # A close from before a reopen has drained: its awaitable returns at once.
            assert epoch.drained
            self.finishing.append(task)

    @precondition(lambda self: self.epoch is not None and self.epoch.closers)
    @rule(data=st.data())
    def cancel_closer(self, data: st.DataObject) -> None:
        assert self.epoch is not None
        closer = data.draw(st.sampled_from(self.epoch.closers))
        closer.cancel()
        self.settle()
        closer.assert_cancelled()
        self.epoch.closers.remove(closer)

    @precondition(lambda self: self.closed)
    @rule()
    def reopen(self) -> None:
        if self.count == 0:
            self.gate.reopen()
            assert self.epoch is not None
            assert self.epoch.drained
            assert not self.epoch.closers
            self.epoch = None
        else:
            with pytest.raises(RuntimeError, match=r"cannot reopen .* still held"):
                self.gate.reopen()

    @rule(cancel=st.booleans(), data=st.data())
    def wait_closing(self, cancel: bool, data: st.DataObject) -> None:
        if cancel and self.closing_waiters:
            task = data.draw(st.sampled_from(self.closing_waiters))
            task.cancel()
            self.settle()
            task.assert_cancelled()
            self.closing_waiters.remove(task)
        else:
            task = self.task(self.gate.wait_closing)
            if self.closed:
                self.finishing.append(task)
            else:
                self.closing_waiters.append(task)

    @rule(blocks=st.lists(st.booleans(), min_size=1, max_size=3))
    def acquire(self, blocks: list[bool]) -> None:
        # One after the other, so that the line's order is known.
        for block in blocks:
            self.acquire_one(block)

    def acquire_one(self, block: bool) -> None:
        if block:
            holder = self.block("b", lambda name: self.gate.acquire(name, cancellable=True))
            waiter = Waiter(holder.name, holder.task, holder)
        else:
            name = self.name("w")
            waiter = Waiter(name, self.task(lambda: self.gate.acquire(name)))
        self.settle()
        if self.closed:
            assert waiter.task.done
            assert isinstance(waiter.task.error, GateClosed), waiter.task.error
        elif self.room():
            waiter.fate = ADMITTED
            self.follow(waiter)
        else:
            assert not waiter.task.done
            self.waiters.append(waiter)

    @precondition(lambda self: self.waiters)
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(self.waiters))
        waiter.task.cancel()
        waiter.fate = CANCELLED

    @rule(data=st.data())
    def same_tick(self, data: st.DataObject) -> None:
        """Cancel waiters, release, close and reopen in one go: nothing runs in
        between, so the gate sees them all before any task they wake."""
        kinds = ["cancel", "release", "close", "reopen"]
        ops: list[tuple[str, Any]] = []
        held = list(self.held)
        # Only plain waiters: a cancellable block admitted before its task's
        # cancellation would begin, then end by that cancellation, not the gate's.
        plain = [w for w in self.waiters if w.block is None]
        for kind in data.draw(st.lists(st.sampled_from(kinds), min_size=2, max_size=4)):
            if kind == "cancel" and plain:
                ops.append(("cancel", data.draw(st.sampled_from(plain))))
            elif kind == "release" and held:
                ops.append(("release", held.pop(data.draw(st.integers(0, len(held) - 1)))))
            elif kind == "close":
                ops.append(("close", data.draw(GRACES)))
            elif kind == "reopen":
                ops.append(("reopen", None))
        reopened: list[bool] = []

        def run() -> None:
            for kind, arg in ops:
                if kind == "cancel":
                    arg.task.cancel_here()
                elif kind == "release":
                    arg[0].release()
                elif kind == "close":
                    self.gate.close_nowait(grace=arg)
                else:
                    try:
                        self.gate.reopen()
                    except RuntimeError:
                        reopened.append(False)
                    else:
                        reopened.append(True)

        self.call(run)
        for kind, arg in ops:
            if kind == "cancel":
                arg.fate = arg.fate or CANCELLED
            elif kind == "release":
                self.held.remove(arg)
                self.released.append(arg[0])
                self.let_go(arg[1])
                self.freed()
            elif kind == "close":
                self.shut(arg)
            else:
                can = self.epoch is not None and self.count == 0
                assert reopened.pop(0) == can
                if can:
                    assert self.epoch is not None
                    assert self.epoch.drained
                    self.epoch = None

    @rule(kind=st.sampled_from(["enter", "clone"]), data=st.data())
    def start_block(self, kind: str, data: st.DataObject) -> None:
        if kind == "clone" and self.held:
            guard, _ = data.draw(st.sampled_from(self.held))
            self.clone_block(guard)
            return
        block = self.block("b", lambda name: self.gate.enter(name, cancellable=True))
        self.settle()
        if self.closed or not self.room():
            assert block.task.done
            expected = GateClosed if self.closed else anyio.WouldBlock
            assert isinstance(block.task.error, expected)
        else:
            assert not block.task.done
            self.blocks.append(block)

    def clone_block(self, guard: GateGuard) -> None:
        # A clone is admitted on a closed or full gate too; if the close's grace
        # has run out, its block is cancelled at once.
        block = self.block("b", lambda name: guard.clone(name, cancellable=True))
        self.settle()
        if self.epoch is not None and self.epoch.deadline == PASSED:
            self.doomed.append(block)
        else:
            assert not block.task.done
            self.blocks.append(block)

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def end_block(self, data: st.DataObject) -> None:
        block = data.draw(st.sampled_from(self.blocks))
        self.call(block.stop)
        self.settle()
        assert block.task.done
        assert block.task.error is None, block.task.error
        assert block.guard is not None
        assert not block.guard.cancelled_caught
        self.blocks.remove(block)
        self.let_go(block.name)
        self.freed()

    # -- The check -------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        self.settle_model()
        for task in self.finishing:
            task.assert_returned()
        self.finishing = []

        gate = self.gate
        assert gate.count == self.count
        assert gate.closed == self.closed
        names = [name for _, name in self.held if name is not None]
        names += [block.name for block in self.blocks]
        holders = gate.holders()
        assert sorted(h.name for h in holders) == sorted(names)
        # Oldest first. Names are compared as sets because waiters admitted
        # together may resume, and so be recorded, in either order.
        assert all(a.held_for >= b.held_for for a, b in pairwise(holders))
        stats = gate.statistics()
        assert stats.count == self.count
        assert stats.closed == self.closed
        assert stats.limit == self.limit
        assert stats.tasks_waiting == len(self.waiters)
        assert sorted(h.name for h in stats.holders) == sorted(names)

        # Nothing returns early, and nothing is left stranded.
        epoch = self.epoch
        for closer in [] if epoch is None else epoch.closers:
            assert not closer.done
        for task in self.closing_waiters:
            assert not task.done
        for waiter in self.waiters:
            assert not waiter.task.done

        # A block runs under the deadline of the close's grace, if any.
        if self.blocks:

            def poke() -> None:
                for block in self.blocks:
                    block.poke()

            self.call(poke)
            self.settle()
            pending = epoch is not None and epoch.deadline == PENDING
            for block in self.blocks:
                assert not block.task.done
                assert block.deadline is not None
                assert math.isinf(block.deadline) != pending, (block.deadline, pending)

        assert self.records.take() == self.said
        self.said = Counter()

    def teardown(self) -> None:
        try:
            # Waiters first: a release would admit them, and they would hold on.
            for waiter in self.waiters:
                waiter.task.cancel()
            for guard, _ in self.held:
                guard.release()

            def stop() -> None:
                for block in self.blocks + self.doomed:
                    block.stop()

            self.call(stop)
            self.call(self.gate.close)
            for task in self.tasks:
                task.future.result(timeout=TIMEOUT)
        except BaseException as exc:
            # Cancels what is left, so that a failure is reported rather than hung on.
            self.portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            self.portal_cm.__exit__(None, None, None)
            assert self.gate.count == 0
        finally:
            for drained, _ in self.pending:
                drained.close()
            self.logger.removeHandler(self.records)
            self.logger.setLevel(self.log_level)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gate_against_model(backend: tuple[str, dict[str, Any]]) -> None:
    machine = type(f"GateModel[{backend[0]}]", (GateModel,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=200, stateful_step_count=30, deadline=None),
    )
