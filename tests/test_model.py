"""A Gate held against a plain model, under random sequences of operations.

Hypothesis drives one gate per example on one backend, through a blocking
portal: entries, releases, clones, ``with gate``, closes in tasks (with and
without grace), cancelled closers, reopens, waiters in ``acquire`` on a limited
gate, and cancellable blocks. After every step the event loop is let run until
every task is blocked, and the gate is checked against the model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
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
from helpers import BACKENDS

TIMEOUT = 5


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

    def cancel(self) -> None:
        scope = self.scope
        assert scope is not None, "the task has not started"
        call(self.portal, scope.cancel)


class Block:
    """A task holding a cancellable guard in a ``with`` block until told to stop."""

    def __init__(self, portal: BlockingPortal, gate: Gate) -> None:
        self.stop = call(portal, anyio.Event)
        self.guard: GateGuard | None = None

        async def hold() -> None:
            with gate.enter("block", cancellable=True) as guard:
                self.guard = guard
                await self.stop.wait()

        self.task = Task(portal, hold)


class GateModel(RuleBasedStateMachine):
    backend: tuple[str, dict[str, Any]] = ("asyncio", {})

    def __init__(self) -> None:
        super().__init__()
        self.portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            *self.backend
        )
        self.portal = self.portal_cm.__enter__()
        self.gate = Gate("model")
        self.limit: int | None = None
        # The model.
        self.held: list[GateGuard] = []
        self.released: list[GateGuard] = []
        self.closed = False
        self.closers: list[Task] = []
        self.waiters: list[Task] = []
        self.blocks: list[Block] = []
        self.failed_waiters: list[Task] = []

    @property
    def count(self) -> int:
        return len(self.held) + len(self.blocks)

    def call(self, func: Callable[[], Any]) -> Any:
        return call(self.portal, func)

    def settle(self) -> None:
        self.call(anyio.wait_all_tasks_blocked)

    def admit_waiters(self) -> None:
        """What the gate should do after a release: admit queued waiters in order."""
        self.settle()
        while not self.closed and self.waiters and self.room_for_waiter():
            waiter = self.waiters.pop(0)
            assert waiter.done, "a waiter was not admitted when there was room"
            assert isinstance(waiter.result, GateGuard)
            self.held.append(waiter.result)

    def room_for_waiter(self) -> bool:
        return self.limit is None or self.count < self.limit

    def room(self) -> bool:
        return self.room_for_waiter() and not self.waiters

    def expect_entry(self, enter: Callable[[], GateGuard]) -> GateGuard | None:
        if self.closed:
            with pytest.raises(GateClosed):
                enter()
            return None
        if not self.room():
            with pytest.raises(anyio.WouldBlock):
                enter()
            return None
        return enter()

    @initialize(limit=st.sampled_from([None, 1, 3]))
    def start(self, limit: int | None) -> None:
        # An unbounded gate takes the lock-free path; a bounded one, admission.
        self.limit = limit
        self.gate = Gate("model", limit=limit, warn_after=None)

    @rule(named=st.booleans())
    def enter(self, named: bool) -> None:
        guard = self.expect_entry(lambda: self.gate.enter("h" if named else None))
        if guard is not None:
            assert guard.name == ("h" if named else None)
            self.held.append(guard)

    @rule()
    def with_gate(self) -> None:
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

            # In the event loop's thread, so that the wakeups it causes are done
            # by the time the loop settles (threads are tested in test_gate.py).
            self.call(hold)
            self.admit_waiters()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        guard = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.call(guard.release)
        self.released.append(guard)
        self.admit_waiters()

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def release_again(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.released)).release()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def clone(self, data: st.DataObject) -> None:
        self.held.append(data.draw(st.sampled_from(self.held)).clone())

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def clone_released(self, data: st.DataObject) -> None:
        with pytest.raises(RuntimeError, match="released"):
            data.draw(st.sampled_from(self.released)).clone()

    @rule(grace=st.sampled_from([None, 0]))
    def close(self, grace: float | None) -> None:
        self.closers.append(Task(self.portal, lambda: self.gate.close(grace=grace)))
        self.closed = True
        self.settle()
        for waiter in self.waiters:
            assert isinstance(waiter.error, GateClosed)
        self.failed_waiters += self.waiters
        self.waiters = []
        if grace == 0:
            for block in self.blocks:
                assert block.task.done
                assert block.guard is not None
                assert block.guard.cancelled_caught
            self.blocks = []

    @precondition(lambda self: any(not c.done for c in self.closers))
    @rule(data=st.data())
    def cancel_closer(self, data: st.DataObject) -> None:
        closer = data.draw(st.sampled_from([c for c in self.closers if not c.done]))
        closer.cancel()
        self.settle()
        assert closer.done
        assert closer.cancelled
        self.closers.remove(closer)

    @rule()
    def reopen(self) -> None:
        if self.closed and self.count == 0:
            self.gate.reopen()
            self.closed = False
            assert all(closer.done for closer in self.closers)
            self.closers = []
        else:
            with pytest.raises(RuntimeError, match="cannot reopen"):
                self.gate.reopen()

    @rule()
    def acquire(self) -> None:
        waiter = Task(self.portal, lambda: self.gate.acquire("waiter"))
        self.settle()
        if self.closed:
            assert isinstance(waiter.error, GateClosed)
        elif self.room():
            assert isinstance(waiter.result, GateGuard)
            self.held.append(waiter.result)
        else:
            assert not waiter.done
            self.waiters.append(waiter)

    @precondition(lambda self: self.waiters)
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(self.waiters))
        waiter.cancel()
        self.settle()
        assert waiter.done
        assert waiter.result is None
        self.waiters.remove(waiter)

    @rule()
    def start_block(self) -> None:
        block = Block(self.portal, self.gate)
        self.settle()
        if self.closed or not self.room():
            assert block.task.done
            expected = GateClosed if self.closed else anyio.WouldBlock
            assert isinstance(block.task.error, expected)
        else:
            assert not block.task.done
            self.blocks.append(block)

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def end_block(self, data: st.DataObject) -> None:
        block = data.draw(st.sampled_from(self.blocks))
        self.call(block.stop.set)
        self.settle()
        assert block.task.done
        assert block.guard is not None
        assert not block.guard.cancelled_caught
        self.blocks.remove(block)
        self.admit_waiters()

    @invariant()
    def matches_the_model(self) -> None:
        self.settle()
        assert self.gate.count == self.count
        assert self.gate.closed == self.closed
        for closer in self.closers:
            # No closer returns while the gate is held; every one returns once drained.
            assert closer.done == (self.count == 0), (closer.done, self.count)
        for waiter in self.waiters:
            assert not waiter.done

    def teardown(self) -> None:
        try:
            # Waiters first: a release would admit them, and they would hold on.
            for waiter in self.waiters:
                waiter.cancel()
            for guard in self.held:
                guard.release()
            for block in self.blocks:
                self.call(block.stop.set)
            self.call(self.gate.close)
            for task in self.closers:
                task.future.result(timeout=TIMEOUT)
        except BaseException as exc:
            # Cancels what is left, so that a failure is reported rather than hung on.
            self.portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self.portal_cm.__exit__(None, None, None)
        assert self.gate.count == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_gate_against_model(backend: tuple[str, dict[str, Any]]) -> None:
    machine = type(f"GateModel[{backend[0]}]", (GateModel,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=200, stateful_step_count=30, deadline=None),
    )
