"""Backend-neutral gates: refuse new work, then wait for the work in progress."""

from ._diagnostics import GateStatistics as GateStatistics
from ._diagnostics import Holder as Holder
from ._exceptions import GateClosed as GateClosed
from ._gate import Gate as Gate
from ._gate import GateGuard as GateGuard
from ._tasks import gated as gated

__version__ = "0.2.0"

__all__ = ["Gate", "GateClosed", "GateGuard", "GateStatistics", "Holder", "__version__", "gated"]
