"""Tasks and calls that hold a gate: what ``start_soon``, ``start``, ``guarded`` and
``gated`` run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import partial, wraps
from typing import TYPE_CHECKING, Any, Concatenate, Protocol, TypeVar, overload

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus
from typing_extensions import ParamSpec, TypeVarTuple, Unpack

from ._exceptions import GateClosed
from ._util import check_callable, check_name

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


@overload
def gated(
    method: Callable[Concatenate[_G, _P], Awaitable[_T]], /
) -> Callable[Concatenate[_G, _P], Coroutine[Any, Any, _T]]: ...


@overload
def gated(
    method: None = None, /, *, name: str | None = None, cancellable: bool = False
) -> Callable[
    [Callable[Concatenate[_G, _P], Awaitable[_T]]],
    Callable[Concatenate[_G, _P], Coroutine[Any, Any, _T]],
]: ...


def gated(
    method: Callable[Concatenate[_G, _P], Awaitable[_T]] | None = None,
    /,
    *,
    name: str | None = None,
    cancellable: bool = False,
) -> Any:
    """Decorate an async method so that each call holds ``self.gate`` throughout.

    For objects that own their gate, such as a tenant whose ``__init__`` makes
    ``self.gate = Gate(...)``: :meth:`Gate.guarded` needs the gate when the
    class is defined, this finds it on the instance at each call. Otherwise it
    behaves as :meth:`Gate.guarded`: the gate is entered when the call starts
    running, with ``self.gate.enter(name, cancellable=cancellable)``, so a
    closed gate raises :exc:`GateClosed`, and one at its limit
    :exc:`anyio.WouldBlock`, from the call; the hold ends when the call ends,
    however it ends.

    Use it bare, ``@gated``, or with arguments, ``@gated(name="flush",
    cancellable=True)``.

    ``inspect.iscoroutinefunction()`` is true for the result, and type checkers
    see the method's own parameters and return type.

    :param name: names each call's hold in :meth:`Gate.holders` and the
        slow-close warning; by default the method's ``__qualname__``
    :param cancellable: hold each call in a cancellable block: when a close's
        grace runs out, the call is cancelled and raises :exc:`GateClosed`
    :raises TypeError: if ``method`` is not callable, or ``name`` not a string
    """
    check_name(name)
    if method is None:
        return partial(_gated, name=name, cancellable=bool(cancellable))
    return _gated(method, name=name, cancellable=bool(cancellable))


def _gated(
    method: Callable[Concatenate[_G, _P], Awaitable[_T]], *, name: str | None, cancellable: bool
) -> Callable[Concatenate[_G, _P], Coroutine[Any, Any, _T]]:
    check_callable(method, "gated")
    holder = _holder_name(method, name)

    @wraps(method)
    async def call(self: _G, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        guard = self.gate.enter(holder, cancellable=cancellable)
        with guard:
            return await method(self, *args, **kwargs)
        raise _cancelled(guard)

    return call


def _holder_name(func: object, name: str | None) -> str | None:
    if name is not None:
        return name
    qualname = getattr(func, "__qualname__", None)
    return qualname if isinstance(qualname, str) else None


def _cancelled(guard: GateGuard) -> GateClosed:
    """The error of a call whose cancellable block a close's grace ended."""
    gate = guard.gate
    error = gate._closed_error()
    error.args = (f"{error}: its grace ran out and cancelled the call {guard.name!r}",)
    return error


def _guard_calls(
    gate: Gate, func: Callable[_P, Awaitable[_T]], name: str | None, cancellable: bool
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """What :meth:`Gate.guarded` returns."""
    check_callable(func, "guarded")
    holder = _holder_name(func, name)

    @wraps(func)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        guard = gate.enter(holder, cancellable=cancellable)
        with guard:
            return await func(*args, **kwargs)
        raise _cancelled(guard)

    return call


async def _to_thread(
    gate: Gate,
    guard: GateGuard,
    func: Callable[..., _T],
    args: tuple[object, ...],
    abandon_on_cancel: bool,
    limiter: anyio.CapacityLimiter | None,
) -> _T:
    """Run ``func(*args)`` in a worker thread that releases ``guard`` when it ends.

    The hold is claimed once, by whoever pops it first: the worker thread, as
    it starts ``func``, or this task, if it is cancelled or fails before the
    thread started (a thread that starts after that does not run ``func``).
    So a thread abandoned while it runs keeps the gate held until it ends.
    """
    claim = [guard]

    def run() -> _T:
        try:
            held = claim.pop()
        except IndexError:
            raise GateClosed(f"{gate!r}: the call was given up before its thread started") from None
        try:
            return func(*args)
        finally:
            held.release()

    try:
        return await anyio.to_thread.run_sync(
            run, abandon_on_cancel=abandon_on_cancel, limiter=limiter
        )
    except BaseException:
        try:
            held = claim.pop()
        except IndexError:
            pass  # the thread has it, and releases it as it ends
        else:
            held.release()
        raise


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
