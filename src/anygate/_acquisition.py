"""What :meth:`Gate.acquire` returns: an awaitable and an async context
manager, whose ``async with`` path is the hot path of a bounded gate."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel
from typing_extensions import final

from ._admission import Admission
from ._closing import Closing
from ._guards import CancellableGuard, GateGuard, NamedGuard, UnnamedGuard, guard_class
from ._util import check_name


class AcquiringGate(Protocol):
    """What an acquisition needs of its gate (the gate module's ``Gate``)."""

    #: One item per hold; see ``GateCore`` for the counter's rule.
    _holds: list[None]
    _closed_or_bounded: bool
    _closing: Closing | None
    _admission: Admission | None
    _fast_acquire: bool

    def _drop(self) -> None: ...
    def _settle(self, soon: bool = False) -> None: ...
    async def _acquire(self, name: str | None, cls: type[GateGuard]) -> GateGuard: ...


# Not @final at runtime only for its private subclass; the stubs forbid subclassing.
class Acquisition:
    """What :meth:`Gate.acquire` returns: await it, or use it with ``async with``."""

    __slots__ = ("_cls", "_gate", "_guard", "_name")

    def __init__(self, gate: AcquiringGate, name: str | None, cancellable: bool) -> None:
        self._gate = gate
        self._name = name
        self._cls = guard_class(name, cancellable)
        self._guard: GateGuard | None = None

    def __repr__(self) -> str:
        name = "" if self._name is None else f" {self._name!r}"
        return f"<Acquisition{name} of {self._gate!r}>"

    def __await__(self) -> Generator[Any, None, GateGuard]:
        return self._gate._acquire(self._name, self._cls).__await__()

    async def __aenter__(self) -> GateGuard:
        gate = self._gate
        admission = gate._admission
        if self._cls is UnnamedGuard:
            # HOT COPY of GateCore._acquire's counted path, for an unnamed guard.
            holds = gate._holds
            guard: GateGuard = UnnamedGuard()
            guard._gate = gate  # type: ignore[assignment]  # the gate, seen through its protocol
            holds.append(None)
            guard._holds = holds
            if not gate._closed_or_bounded or (
                gate._closing is None
                and (admission is None or (len(holds) <= admission.limit and not admission.line))
            ):
                if not gate._fast_acquire:
                    # HOT COPY of checkpoint_holding.
                    try:
                        await anyio.lowlevel.checkpoint()
                    except BaseException:
                        guard.release()
                        raise
                self._guard = guard
                return guard
            # Closed, or no room: give the count back, and take the slow path.
            guard._holds = None
            gate._drop()
        guard = await gate._acquire(self._name, self._cls)
        self._guard = guard
        return guard.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        guard = self._guard
        if guard is None:
            return None
        self._guard = None
        if guard.__class__ is UnnamedGuard:
            # HOT COPY of GateGuard._release.
            holds = guard._holds
            if holds is not None:
                gate = self._gate
                try:
                    guard._holds = None
                    holds.pop()
                    if gate._closed_or_bounded:
                        gate._settle()
                except BaseException:
                    if gate._closed_or_bounded:
                        gate._settle()
                    raise
            return None
        return guard.__exit__(exc_type, exc_val, exc_tb)


def recorded_acquisition(gate: AcquiringGate, name: str | None, cancellable: bool) -> Acquisition:
    """What ``acquire()`` of a gate in debug mode returns: every guard it makes,
    named or not, comes from the gate's ``_new_guard``, which records its site."""
    if name is not None:
        check_name(name)
    acquisition = _Acquisition()
    acquisition._gate = gate
    acquisition._name = name
    acquisition._cls = CancellableGuard if cancellable else NamedGuard
    acquisition._guard = None
    return acquisition


@final
class _Acquisition(Acquisition):
    """An :class:`Acquisition` built the cheapest way, as guards are."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __init__(self) -> None: ...

    else:
        __init__ = object.__init__
