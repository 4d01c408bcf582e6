from __future__ import annotations

from typing import TYPE_CHECKING

from anyio import ClosedResourceError

if TYPE_CHECKING:
    from ._gate import Gate


class GateClosed(ClosedResourceError):
    """Raised when trying to enter a gate that is closed.

    Its message names the gate, and the ancestor whose close reached it if
    that is what closed it, as in ``gate 'pool t1' is closed: its parent
    'tenant t1' is closing``. It may also be built by hand, with a message
    only: :attr:`gate` and :attr:`closed_by` are then ``None``.
    """

    #: The gate that refused, or ``None`` for a ``GateClosed`` built by hand.
    gate: Gate | None
    #: The gate whose close closed :attr:`gate`: that gate itself, or the
    #: ancestor whose close reached it; ``None`` for one built by hand.
    closed_by: Gate | None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.gate = None
        self.closed_by = None
