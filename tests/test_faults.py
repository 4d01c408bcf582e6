"""Faults inside held blocks, cancellation at every await, and a close that waits for itself.

Other misuse (bad values, reopening while held, a non-callable task) is tested
with the feature it misuses, in test_gate.py and test_shutdown.py.
"""

from __future__ import annotations

import logging
import signal
import sys
from asyncio import CancelledError
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
import pytest
from anyio import CancelScope, create_task_group, wait_all_tasks_blocked

from anygate import Gate
from helpers import BACKENDS, Closer, private

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


def fail_first() -> NoReturn:
    raise KeyError("first")


def fail() -> NoReturn:
    """Raise a ValueError whose __context__ is a KeyError."""
    try:
        fail_first()
    except KeyError:
        raise ValueError("second")  # noqa: B904 - the implicit context is the point


def hold_with_gate(gate: Gate) -> AbstractAsyncContextManager[Any]:
    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        with gate:
            yield

    return hold()


def hold_with_enter(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.enter()


def hold_named(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.enter("named")


def hold_cancellable(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.enter("cancellable", cancellable=True)


def hold_acquired(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.acquire("acquired")


HOLDS = [
    pytest.param(hold_with_gate, id="with gate"),
    pytest.param(hold_with_enter, id="enter()"),
    pytest.param(hold_named, id="enter(name)"),
    pytest.param(hold_cancellable, id="enter(cancellable)"),
    pytest.param(hold_acquired, id="acquire()"),
]
Hold = Callable[[Gate], AbstractAsyncContextManager[Any]]


@pytest.mark.parametrize("hold", HOLDS)
class TestErrorsInHeldBlocks:
    async def test_exception_passes_through_unchanged(self, hold: Hold) -> None:
        gate = Gate(limit=2)
        raised: list[BaseException] = []
        with pytest.raises(ValueError, match="second") as info:
            async with hold(gate):
                try:
                    fail()
                except ValueError as exc:
                    raised.append(exc)
                    raise
        assert info.value is raised[0]
        assert isinstance(info.value.__context__, KeyError)
        assert info.traceback[-1].name == "fail"
        assert gate.count == 0

    async def test_exception_group_is_not_wrapped_again(self, hold: Hold) -> None:
        gate = Gate(limit=2)
        raised: list[BaseException] = []

        async def child() -> None:
            fail()

        with pytest.raises(ExceptionGroup) as info:
            async with hold(gate):
                try:
                    async with create_task_group() as tg:
                        tg.start_soon(child)
                except ExceptionGroup as group:
                    raised.append(group)
                    raise
        assert info.value is raised[0]
        [error] = info.value.exceptions
        assert isinstance(error, ValueError)
        assert gate.count == 0

    async def test_cancellation_releases(self, hold: Hold) -> None:
        gate = Gate(limit=2)
        with CancelScope() as scope:
            async with hold(gate):
                assert gate.count == 1
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert gate.count == 0


class TestGuardedErrors:
    async def test_exception_passes_through_unchanged(self) -> None:
        gate = Gate()

        @gate.guarded
        async def work() -> None:
            await anyio.lowlevel.checkpoint()
            fail()

        with pytest.raises(ValueError, match="second") as info:
            await work()
        assert isinstance(info.value.__context__, KeyError)
        assert info.traceback[-1].name == "fail"
        assert gate.count == 0


class TestCloseFromAHolder:
    async def test_inside_a_cancellable_block_raises(self) -> None:
        gate = Gate("g")
        with gate.enter("request", cancellable=True):
            with pytest.raises(
                RuntimeError, match=r"'request' that holds it: it would wait for itself forever"
            ):
                await gate.close()
            assert gate.closed
            assert private(gate)._closing.waiters == []
        await gate.close()
        assert gate.count == 0

    async def test_cancellable_block_of_another_task_is_waited_for(self) -> None:
        gate = Gate()
        release = anyio.Event()
        closer = Closer(gate)

        async def request() -> None:
            with gate.enter(cancellable=True):
                await release.wait()

        async with create_task_group() as tg:
            tg.start_soon(request)
            await wait_all_tasks_blocked()
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            release.set()
        assert closer.done

    async def test_other_holds_are_named_in_the_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = Gate("g", warn_after=0)
        scope = CancelScope()

        async def close_while_holding() -> None:
            with gate.enter(), scope:
                await gate.close()

        with caplog.at_level(logging.WARNING, logger="anygate"):
            async with create_task_group() as tg:
                tg.start_soon(close_while_holding, name="the-closing-task")
                await wait_all_tasks_blocked()
                scope.cancel()
        assert "awaited in task 'the-closing-task'" in caplog.text
        assert "holds the gate itself" in caplog.text
        assert gate.count == 0


@contextmanager
def default_interrupt_handler() -> Iterator[None]:
    """Let a SIGINT raise KeyboardInterrupt as it does for a user's program."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Before 3.11, asyncio has no Runner to turn the cancellation of the main task
# by an interrupt back into KeyboardInterrupt; anyio's stand-in raises the
# cancellation.
INTERRUPTED = (
    (KeyboardInterrupt,) if sys.version_info >= (3, 11) else (KeyboardInterrupt, CancelledError)
)


@pytest.mark.parametrize("backend", BACKENDS)
class TestKeyboardInterrupt:
    """Run outside the pytest plugin: the interrupt ends the whole event loop."""

    def test_interrupt_inside_held_blocks(self, backend: tuple[str, dict[str, Any]]) -> None:
        gate = Gate()
        kept = gate.enter()

        async def main() -> None:
            with gate, gate.enter(), gate.enter("named"):
                assert gate.count == 4
                signal.raise_signal(signal.SIGINT)
                await anyio.sleep_forever()

        with default_interrupt_handler(), pytest.raises(INTERRUPTED):
            anyio.run(main, backend=backend[0], backend_options=backend[1])
        assert gate.count == 1
        assert gate.holders() == []
        kept.release()
        assert gate.count == 0
