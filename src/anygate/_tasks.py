"""Tasks and calls that hold a gate: what ``start_soon``, ``start``, ``guarded`` and
``gated`` run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, Concatenate, Protocol, TypeVar

from anyio.abc import TaskStatus
from typing_extensions import ParamSpec, TypeVarTuple, Unpack

from ._exceptions import GateClosed
from ._util import check_callable

if TYPE_CHECKING:
    from ._gate import Gate
    from ._guards import GateGuard

_T = TypeVar("_T")
_P = ParamSpec("_P")
_PosArgsT = TypeVarTuple("_PosArgsT")


class TaskStarter(Protocol):
    """What :meth:`Gate.start_soon` and :meth:`Gate.start` start tasks in: an anyio
    task group, a trio nursery, or anything else with their two methods."""

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any, name: Any = None
    ) -> object:
        """Start ``func(*args)`` as a task, without waiting."""
        ...

    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any, name: Any = None
    ) -> Any:
        """Start ``func(*args, task_status=...)`` and return what it passes to
        ``task_status.started()``."""
        ...


class HasGate(Protocol):
    """An object that owns a gate as its ``gate`` attribute, for :func:`gated`."""

    @property
    def gate(self) -> Gate:
        """The gate that :func:`gated` methods hold."""
        ...


_G = TypeVar("_G", bound=HasGate)


def gated(
    method: Callable[Concatenate[_G, _P], Awaitable[_T]],
) -> Callable[Concatenate[_G, _P], Coroutine[Any, Any, _T]]:
    """Decorate an async method so that each call holds ``self.gate`` throughout.

    For objects that own their gate, such as a tenant whose ``__init__`` makes
    ``self.gate = Gate(...)``: :meth:`Gate.guarded` needs the gate when the
    class is defined, this finds it on the instance at each call. Otherwise it
    behaves as :meth:`Gate.guarded`: the gate is entered when the call starts
    running, with ``with self.gate:``, so a closed gate raises
    :exc:`GateClosed`, and one at its limit :exc:`anyio.WouldBlock`, from the
    call; the hold ends when the call ends, however it ends.

    ``inspect.iscoroutinefunction()`` is true for the result, and type checkers
    see the method's own parameters and return type.

    :raises TypeError: if ``method`` is not callable
    """
    check_callable(method, "gated")

    @wraps(method)
    async def call(self: _G, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self.gate:
            return await method(self, *args, **kwargs)

    return call


def _guard_calls(
    gate: Gate, func: Callable[_P, Awaitable[_T]]
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """What :meth:`Gate.guarded` returns."""
    check_callable(func, "guarded")

    @wraps(func)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with gate:
            return await func(*args, **kwargs)

    return call


async def _run_holding(
    guard: GateGuard,
    func: Callable[[Unpack[_PosArgsT]], Awaitable[Any]],
    *args: Unpack[_PosArgsT],
) -> None:
    """Run a task started by :meth:`Gate.start_soon` with a name, then release
    its guard (an unnamed one runs ``UnnamedGuard._run``)."""
    try:
        await func(*args)
    finally:
        try:
            guard.release()
        except BaseException:
            # Interrupted before the hold was dropped: nobody else can release
            # it, so finish the release before the interrupt goes on.
            guard.release()
            raise


async def _run_cancellable(
    guard: GateGuard,
    func: Callable[[Unpack[_PosArgsT]], Awaitable[Any]],
    *args: Unpack[_PosArgsT],
) -> None:
    """Run a task started by ``start_soon(cancellable=True)`` in its guard's block."""
    try:
        with guard:
            await func(*args)
    except BaseException:
        # The block's exit may have been interrupted before it dropped the
        # hold (see _run_holding); a second release finishes it, or does nothing.
        guard.release()
        raise


class _Handoff:
    """A guard on its way from :meth:`Gate.start` to the task it starts."""

    __slots__ = ("guard", "taken")

    def __init__(self, guard: GateGuard) -> None:
        self.guard = guard
        self.taken = False


class _Status:
    """The ``task_status`` handed on, noting whether the task has started."""

    __slots__ = ("_status", "called")

    def __init__(self, status: TaskStatus[Any]) -> None:
        self._status = status
        self.called = False

    def started(self, value: object = None) -> None:
        self._status.started(value)
        self.called = True


async def _run_started(
    handoff: _Handoff,
    func: Callable[..., Awaitable[Any]],
    *args: object,
    task_status: TaskStatus[Any],
) -> None:
    """Run a task started by :meth:`Gate.start` in the block of its guard."""
    handoff.taken = True
    guard = handoff.guard
    status = _Status(task_status)
    with guard:
        await func(*args, task_status=status)
    if guard.cancelled_caught and not status.called:
        raise GateClosed(
            f"{guard.gate!r} closed and cancelled the task before it called task_status.started()"
        )
