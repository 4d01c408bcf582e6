"""Threads that inherit the context of the code that started them.

On free-threaded 3.14, and with ``PYTHON_THREAD_INHERIT_CONTEXT=1`` on any 3.14,
a thread starts in a copy of its starter's context. anyio marks a running loop
in a context variable, so in a plain thread started from a task, anyio believes
a loop runs there; the backend then raises a bare RuntimeError. Starting a
thread with ``contextvars.copy_context().run`` does exactly what inheritance
does, so these tests prove the behaviour on every interpreter.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from anygate import Gate
from helpers import Closer, in_thread, no_hang

pytestmark = pytest.mark.anyio


def inheriting(func: Callable[[], object]) -> Callable[[], object]:
    """``func``, to run in a thread as a thread that inherited this context."""
    context = contextvars.copy_context()
    return lambda: context.run(func)


class TestInheritedContext:
    async def test_enter_cancellable_needs_a_loop(self) -> None:
        gate = Gate("tenant")
        with pytest.raises(anyio.NoEventLoopError, match="needs an event loop in the calling"):
            in_thread(inheriting(lambda: gate.enter("worker", cancellable=True)))
        assert gate.count == 0

    async def test_clone_cancellable_needs_a_loop(self) -> None:
        gate = Gate("tenant")
        with gate.enter("request") as guard:
            with pytest.raises(anyio.NoEventLoopError, match="needs an event loop in the calling"):
                in_thread(inheriting(lambda: guard.clone("worker", cancellable=True)))
            assert gate.count == 1
        assert gate.count == 0

    async def test_release_from_such_a_thread_wakes_the_close(self) -> None:
        gate = Gate("tenant")
        guard = gate.enter("request")
        closer = Closer(gate)
        with no_hang("close() woken by a release in a thread that inherited the context"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(closer.run)
                await anyio.wait_all_tasks_blocked()
                in_thread(inheriting(guard.release))
        assert closer.done

    async def test_close_and_clone_from_such_a_thread(self) -> None:
        gate = Gate("tenant")
        guard = gate.enter("request")
        child = Gate("child", parent=gate)

        def in_the_thread() -> None:
            gate.close_nowait(grace=5)
            guard.clone("worker").release()

        in_thread(inheriting(in_the_thread))
        assert gate.closed
        assert child.closed
        guard.release()
        with no_hang("close() after a close_nowait() from a thread that inherited the context"):
            await gate.close()
