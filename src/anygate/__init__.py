"""Backend-neutral gates: refuse new work, then wait for the work in progress."""

from ._acquisition import Acquisition as Acquisition
from ._diagnostics import GateStatistics as GateStatistics
from ._exceptions import GateClosed as GateClosed
from ._gate import Gate as Gate
from ._guards import GateGuard as GateGuard
from ._records import Holder as Holder
from ._tasks import gated as gated

__version__ = "0.2.0"

__all__ = [
    "Acquisition",
    "Gate",
    "GateClosed",
    "GateGuard",
    "GateStatistics",
    "Holder",
    "__version__",
    "gated",
]

# Public names say where users import them from, as trio's and anyio's do:
# reprs, tracebacks and the docs then say ``anygate.Gate``.
for _value in (Acquisition, Gate, GateClosed, GateGuard, GateStatistics, Holder, gated):
    _value.__module__ = __name__
del _value
