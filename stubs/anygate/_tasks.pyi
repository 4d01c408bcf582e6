from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, Protocol, TypeVar, overload

from typing_extensions import ParamSpec

from . import Gate

_T = TypeVar("_T")
_P = ParamSpec("_P")

class TaskStarter(Protocol):
    """What :meth:`Gate.start_soon` and :meth:`Gate.start` start tasks in: an anyio
    task group, a trio nursery, or anything else with their two methods.
    """
    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any, name: Any = None
    ) -> object:
        """Start ``func(*args)`` as a task, without waiting."""
    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any, name: Any = None
    ) -> Any:
        """Start ``func(*args, task_status=...)`` and return what it passes to
        ``task_status.started()``.
        """

class HasGate(Protocol):
    """An object that owns a gate as its ``gate`` attribute, for :func:`gated`."""
    @property
    def gate(self) -> Gate:
        """The gate that :func:`gated` methods hold."""

_G = TypeVar("_G", bound=HasGate)

@overload
def gated(
    method: Callable[Concatenate[_G, _P], Awaitable[_T]], /
) -> Callable[Concatenate[_G, _P], Coroutine[Any, Any, _T]]:
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

@overload
def gated(
    method: None = None, /, *, name: str | None = None, cancellable: bool = False
) -> Callable[
    [Callable[Concatenate[_G, _P], Awaitable[_T]]],
    Callable[Concatenate[_G, _P], Coroutine[Any, Any, _T]],
]:
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
